"""Posterior draws with their MCMC diagnostics (r-hat, ESS: `diagnostics`; divergences), as .npz."""

import dataclasses
import json
from typing import Callable, Optional

import jax
import numpy as np
from numpyro import infer

from t2jax import io
from t2jax.laws import diagnostics


@dataclasses.dataclass(frozen=True)
class Posterior:
  """`draws[name]` has a leading axis S = chains × samples (chain-major); `rhat`, `ess` per element
  (rank-normalised split r-hat, min of bulk and tail ESS: `diagnostics.rhat_ess`).

  `meta` holds what the draws mean (e.g. {"law": "approach2", "tasks": [...]}).
  """
  draws: dict
  num_chains: int
  rhat: dict
  ess: dict
  num_divergences: int
  meta: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def from_chains(cls, chains: dict, num_divergences: int, meta: Optional[dict] = None) -> "Posterior":
    """Builds from `chains[name]` of shape (C, S_c, ...)."""
    chains = {k: np.asarray(v, np.float64) for k, v in chains.items()}
    num_chains = {v.shape[0] for v in chains.values()}
    if len(num_chains) != 1:
      raise ValueError(f"Posterior.from_chains: sites disagree on the chain count {num_chains}")
    rhat_ess = {k: diagnostics.rhat_ess(v) for k, v in chains.items()}
    return cls(
        draws={k: v.reshape((-1,) + v.shape[2:]) for k, v in chains.items()},
        num_chains=num_chains.pop(),
        rhat={k: r for k, (r, _) in rhat_ess.items()},
        ess={k: e for k, (_, e) in rhat_ess.items()},
        num_divergences=int(num_divergences),
        meta=dict(meta or {}))

  @property
  def num_draws(self) -> int:
    return len(next(iter(self.draws.values())))

  def convergence(self, rhat_max: float = 1.05, max_divergent_fraction: float = 0.01) -> dict:
    """Max r-hat and min ESS per parameter, divergences, and the reasons not to trust the chains
    (`problems`; `converged` when there are none): `diagnostics.convergence`."""
    return diagnostics.convergence(self, rhat_max, max_divergent_fraction)

  def quantile(self, q: float) -> dict:
    return {k: np.quantile(v, q, axis=0) for k, v in self.draws.items()}

  def median(self) -> dict:
    return self.quantile(0.5)

  def summary(self, interval: float = 0.9) -> dict:
    """Per parameter: median, mean, the central `interval` bounds, r-hat, ESS; plus totals."""
    lo, hi = (1 - interval) / 2, (1 + interval) / 2
    checks = self.convergence()
    params = {
        k: {"median": np.median(v, 0), "mean": np.mean(v, 0), "lower": np.quantile(v, lo, 0),
            "upper": np.quantile(v, hi, 0), "rhat": self.rhat[k], "ess": self.ess[k]}
        for k, v in self.draws.items()}
    return {"params": params, "interval": interval, "num_chains": self.num_chains,
            "num_draws": self.num_draws, "num_divergences": self.num_divergences,
            "converged": checks["converged"], "problems": checks["problems"], "meta": self.meta}

  def save(self, path: str) -> None:
    """Writes an .npz (atomically): draws, r-hat, ESS and a JSON header."""
    arrays = {}
    for group in ("draws", "rhat", "ess"):
      arrays.update({f"{group}/{k}": v for k, v in getattr(self, group).items()})
    header = {"num_chains": self.num_chains, "num_divergences": self.num_divergences,
              "meta": io._jsonable(self.meta)}
    arrays["header"] = np.array(json.dumps(header))
    with io.atomic_open(path, "wb") as f:
      np.savez(f, **arrays)

  @classmethod
  def load(cls, path: str) -> "Posterior":
    with np.load(path, allow_pickle=False) as z:
      header = json.loads(str(z["header"]))
      groups = {"draws": {}, "rhat": {}, "ess": {}}
      for key in z.files:
        if "/" in key:
          group, name = key.split("/", 1)
          groups[group][name] = z[key]
    return cls(num_chains=header["num_chains"], num_divergences=header["num_divergences"],
               meta=header["meta"], **groups)


def sample_nuts(model: Callable, init: dict, derive: Callable, *, num_chains: int, num_warmup: int,
                num_samples: int, seed: int, jitter: float = 0.02, dense_mass: bool = True,
                target_accept_prob: float = 0.95, meta: Optional[dict] = None,
                **model_kwargs) -> Posterior:
  """NUTS on `model` (every latent site unconstrained) in float64, warm-started at `init`.

  Each chain starts at `init` plus N(0, jitter²) noise, so that r-hat can see chains that do not
  mix. `derive(samples)` maps sampled sites, shaped (C, S, ...), to the reported parameters.
  Chains run in parallel where there are enough JAX devices (`numpyro.set_host_device_count`
  in a script), else one after another.
  """
  if num_chains < 1 or num_warmup < 1 or num_samples < 2:
    raise ValueError(f"sample_nuts: need num_chains >= 1, num_warmup >= 1, num_samples >= 2; got "
                     f"{num_chains}, {num_warmup}, {num_samples}")
  method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
  with jax.enable_x64(True):
    key_init, key_run = jax.random.split(jax.random.key(seed))
    names = sorted(init)
    keys = jax.random.split(key_init, len(names))
    init_params = {
        name: np.asarray(init[name], np.float64)[None]
        + jitter * np.asarray(jax.random.normal(k, (num_chains,) + np.shape(init[name]), np.float64))
        for name, k in zip(names, keys)}
    # numpyro validates a model by initialising it once even when `init_params` are given; with
    # its default (uniform on [-2, 2]) that can fail for peaked likelihoods, so start it at `init`.
    kernel = infer.NUTS(model, dense_mass=dense_mass, target_accept_prob=target_accept_prob,
                        init_strategy=infer.init_to_value(values=dict(init)))
    mcmc = infer.MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples,
                      num_chains=num_chains, chain_method=method, progress_bar=False)
    mcmc.run(key_run, init_params=init_params if num_chains > 1 else
             {k: v[0] for k, v in init_params.items()}, extra_fields=("diverging",), **model_kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    divergences = int(np.sum(mcmc.get_extra_fields()["diverging"]))
    chains = {k: np.asarray(v) for k, v in derive(samples).items()}
  return Posterior.from_chains(chains, divergences, meta)
