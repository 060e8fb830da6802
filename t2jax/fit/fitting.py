"""The fit stage: point fits and NUTS posteriors of every law the tables support → `out_dir/fit/`.

`fit_tables` validates the tables (nothing is written when they are bad), fits Chinchilla on the
losses and Approach 1 and Approach 2 on the per-question results (held-out rows left out), checks
every posterior's convergence (`Posterior.convergence`; refits with longer chains, then refuses
unconverged ones unless `allow_unconverged`), and scores the held-out rows (`scoring`). Writes
fit/summary.json, fit/diagnostics.json, fit/extrapolation.json and fit/posteriors/*.npz.
"""

import os
import time
from typing import Callable, Optional

import numpy as np

from t2jax import io
from t2jax.fit import config as config_lib
from t2jax.fit import inputs as inputs_lib
from t2jax.fit import scoring
from t2jax.laws import approach1, approach2, chinchilla, optimize
from t2jax.laws import posterior as posterior_lib


class UnconvergedError(ValueError):
  """NUTS chains failed the convergence checks and `allow_unconverged` is off."""


def _param_summary(post: posterior_lib.Posterior) -> dict:
  return {name: optimize.interval(v) for name, v in post.draws.items()}


def _nuts(cfg, scale: int = 1) -> dict:
  return dict(num_chains=int(cfg.num_chains), num_warmup=scale * int(cfg.num_warmup),
              num_samples=scale * int(cfg.num_samples), seed=int(cfg.seed))


# Each `_fit_*` runs the point fit once and returns (point summary, sample), where `sample(scale)`
# draws the posteriors with `scale` times the configured warm-up and draws.

def _fit_chinchilla(losses, cfg):
  rows = losses.fit_rows()
  point = chinchilla.fit(rows.N, rows.D, rows.loss)
  return {"params": point.params, "objective": point.objective,
          "num_near_best_starts": point.num_near_best}, lambda scale: {
              "chinchilla": chinchilla.sample_posterior(rows.N, rows.D, rows.loss, point=point,
                                                        **_nuts(cfg, scale))}


def _fit_approach1(results, cfg):
  tables = approach1.table_from_results(results, k_grid=config_lib.k_grid(cfg),
                                        source=cfg.accuracy)
  point, fits = {}, {}
  for task, t in tables.items():
    num_k = len(np.unique(t.k))
    config_lib.log(f"approach1 [{task}]: {len(t.k) // num_k} models × {num_k} k (targets from "
                   f"{cfg.accuracy})")
    if t.censored:
      config_lib.log(f"approach1 [{task}]: {len(t.censored)} models censored (their samples do "
                     f"not identify T(k)), left out: {t.censored}")
    fits[task] = approach1.fit(t.N, t.D, t.k, t.loss)
    point[task] = {"params": fits[task].params, "objective": fits[task].objective,
                   "k_grid": np.unique(t.k), "num_near_best_starts": fits[task].num_near_best,
                   "censored": t.censored}

  def sample(scale):
    return {f"approach1/{task}": approach1.sample_posterior(
        t.N, t.D, t.k, t.loss, point=fits[task], **dict(_nuts(cfg, scale), seed=int(cfg.seed) + 1 + i))
            for i, (task, t) in enumerate(tables.items())}

  return point, sample


def _fit_approach2(results, floors, cfg):
  data = approach2.prepare(results, floors=floors)
  mle = approach2.fit_mle(data)
  point = {"tasks": list(data.tasks), "floors": dict(zip(data.tasks, data.floor_T)),
           "params": {name: dict(zip(data.tasks, v.tolist())) for name, v in mle.items()}}
  return point, lambda scale: {"approach2": approach2.sample_posterior(
      data, mle=mle, **dict(_nuts(cfg, scale), seed=int(cfg.seed) + 100))}


def sample_until_converged(sample: Callable[[int], dict], *, retries: int, rhat_max: float,
                           log: Callable[[str], None] = lambda msg: None) -> tuple:
  """Runs `sample(scale)` (posteriors by name, NUTS with `scale` times the configured warm-up and
  draws) and, while any posterior fails the convergence checks, again with twice the scale, up to
  `retries` times. Returns (posteriors, their `Posterior.convergence` diagnostics, attempts made)."""
  for attempt in range(retries + 1):
    posts = sample(2 ** attempt)
    checks = {name: post.convergence(rhat_max) for name, post in posts.items()}
    for name, d in checks.items():
      log(f"{name}: max r-hat {d['rhat_max']:.3f}, min ESS {d['ess_min']:.0f}, "
          f"{d['num_divergences']} divergences{'' if d['converged'] else ' — NOT CONVERGED'}")
    if all(d["converged"] for d in checks.values()):
      break
    if attempt < retries:
      failed = ", ".join(name for name, d in checks.items() if not d["converged"])
      log(f"{failed}: refitting with twice the warm-up and draws (retry {attempt + 1} of {retries})")
  return posts, checks, attempt + 1


def posterior_path(out_dir: str, name: str) -> str:
  """Where posterior `name` (e.g. "approach1/gen") is saved under `out_dir/fit/posteriors/`."""
  return os.path.join(out_dir, "fit", "posteriors", name.replace("/", "__") + ".npz")


def fit_tables(results_path: str, rungs_path: Optional[str], out_dir: str, cfg) -> dict:
  """Fits every law the tables support; writes `out_dir/fit/` and returns its summary."""
  inputs = inputs_lib.load_inputs(results_path, rungs_path, cfg)
  start = time.time()
  for law, why in inputs.skipped.items():
    config_lib.log(f"{law}: skipped ({why})")
  point, posts = {}, {}
  fit_results = (inputs.results.select(~inputs.results_heldout)
                 if inputs.results is not None else None)
  fitters = {"chinchilla": lambda: _fit_chinchilla(inputs.losses, cfg),
             "approach1": lambda: _fit_approach1(fit_results, cfg),
             "approach2": lambda: _fit_approach2(fit_results, inputs.floors, cfg)}
  diagnostics = {}
  for law in inputs.laws:
    t0 = time.time()
    config_lib.log(f"{law}: point fit + NUTS ({cfg.num_chains} chains × {cfg.num_warmup} warm-up + "
                   f"{cfg.num_samples} draws)")
    point[law], sample = fitters[law]()
    new, checks, _ = sample_until_converged(sample, retries=int(cfg.retries),
                                            rhat_max=cfg.rhat_max, log=config_lib.log)
    posts.update(new)
    diagnostics.update(checks)
    config_lib.log(f"{law}: done in {time.time() - t0:.0f}s")
  unconverged = {name: d["problems"] for name, d in diagnostics.items() if not d["converged"]}
  fit_dir = os.path.join(out_dir, "fit")
  if unconverged and not cfg.allow_unconverged:
    io.write_json(os.path.join(fit_dir, "diagnostics.json"), diagnostics)
    raise UnconvergedError(
        f"the NUTS chains did not converge, so no posterior is reported: {unconverged}. Run longer "
        "chains (--config.num_warmup / --config.num_samples), or pass --config.allow_unconverged=True "
        f"to keep them anyway (diagnostics in {fit_dir}/diagnostics.json)")
  for name, post in posts.items():
    post.save(posterior_path(out_dir, name))
  extrapolation = scoring.score_heldout(inputs, posts, cfg)
  summary = {
      "inputs": inputs_lib.describe(inputs, results_path, rungs_path),
      "laws": list(inputs.laws), "skipped": inputs.skipped, "point": point,
      "posterior": {name: _param_summary(post) for name, post in posts.items()},
      "posterior_files": {name: os.path.relpath(posterior_path(out_dir, name), out_dir)
                          for name in posts},
      "diagnostics": diagnostics, "converged": not unconverged,
      "extrapolation": extrapolation["summary"], "seconds": time.time() - start,
      "config": cfg.to_dict()}
  io.write_json(os.path.join(fit_dir, "extrapolation.json"), extrapolation)
  io.write_json(os.path.join(fit_dir, "diagnostics.json"), diagnostics)
  io.write_json(os.path.join(fit_dir, "summary.json"), summary)
  config_lib.log(f"fit written to {fit_dir} ({time.time() - start:.0f}s)")
  return summary


def run_fit(workdir: str, cfg) -> dict:
  """The ladder's fit stage: workdir/results.jsonl (+ rungs.jsonl) → workdir/fit/."""
  rungs = os.path.join(workdir, "rungs.jsonl")
  return fit_tables(os.path.join(workdir, "results.jsonl"), rungs if os.path.exists(rungs) else None,
                    workdir, cfg)
