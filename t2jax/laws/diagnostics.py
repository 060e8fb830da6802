"""The Bayesian workflow through ArviZ (arviz-base, arviz-stats): convergence, netCDF, LOO, plots.

- `rhat_ess`: per-element rank-normalised split r-hat and ESS (min of bulk and tail; Vehtari et
  al. 2021) of (C, S_c, ...) chains; `Posterior.from_chains` stores them, `convergence` (what
  `Posterior.convergence` returns) checks them.
- `to_arviz` / `save_netcdf`: a `Posterior` as an ArviZ DataTree (groups `posterior` and, given
  pointwise log-likelihoods, `log_likelihood`), written as netCDF (h5netcdf) beside the .npz.
- `loo`: PSIS-LOO of a law from its pointwise log-likelihood (S, R) at the draws
  (`t2jax.laws.pointwise`); `choose_likelihood`: Normal or Student-t by their PSIS-LOO.
- `trace_rank_figure`: trace and rank plots of the draws (PNG).

This module reads a `Posterior` by its fields only (no import of `posterior`, which imports it).
"""

import json
import warnings
from typing import Optional, Sequence

import arviz_base
import arviz_stats
import matplotlib.figure
import numpy as np
import xarray as xr
from arviz_stats.base import array_stats

from t2jax import io

TAIL_PROB = (0.05, 0.95)  # the quantiles whose ESS is the tail ESS (ArviZ's default)
LOO_VAR = "obs"  # the log_likelihood group's variable


# ------------------------------------------------------------------------------ convergence

def rhat_ess(chains_CxS) -> tuple:
  """(r-hat, ESS), each of shape chains_CxS.shape[2:]: rank-normalised split r-hat and
  min(bulk ESS, tail ESS) by arviz-stats. A single chain is checked as its two halves (ArviZ needs
  two chains; as split r-hat, this sees a chain that drifts). Elements constant over every draw
  (a fixed input such as a chance floor) get r-hat 1 and ESS C·S_c, where ArviZ would divide by a
  zero variance."""
  x = np.asarray(chains_CxS, np.float64)
  C, S = x.shape[:2]
  halves = x if C > 1 else np.concatenate([x[:, :S // 2], x[:, S - S // 2:]], axis=0)
  constant = np.all(x == x[:1, :1], axis=(0, 1))
  axes = dict(chain_axis=0, draw_axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    rhat = np.asarray(arviz_stats.rhat(halves, method="rank", **axes), np.float64)
    bulk = np.asarray(arviz_stats.ess(x, method="bulk", **axes), np.float64)
    tail = np.asarray(arviz_stats.ess(x, method="tail", prob=TAIL_PROB, **axes), np.float64)
    ess = np.minimum(bulk, tail)
  return np.where(constant, 1.0, rhat), np.where(constant, float(C * S), ess)


def convergence(post, rhat_max: float = 1.05, max_divergent_fraction: float = 0.01) -> dict:
  """Max r-hat and min ESS per parameter (over its elements, from `post.rhat`, `post.ess`),
  divergences, and the reasons not to trust the chains (`problems`; `converged` when there are
  none). Parameters whose draws are all equal (constants carried in the draws, e.g. Approach 2's
  chance `floor`) have no defined r-hat and are skipped."""
  rhat, ess, problems = {}, {}, []
  for name, draws in post.draws.items():
    if np.all(draws == draws[:1]):
      continue
    rhat[name] = float(np.max(np.where(np.isfinite(post.rhat[name]), post.rhat[name], np.inf)))
    ess[name] = float(np.min(np.nan_to_num(post.ess[name], nan=0.0)))
    if rhat[name] > rhat_max:
      problems.append(f"r-hat of {name} is {rhat[name]:.3f} > {rhat_max}")
  if post.num_divergences > max_divergent_fraction * post.num_draws:
    problems.append(f"{post.num_divergences} divergent transitions in {post.num_draws} draws "
                    f"(> {max_divergent_fraction:.1%})")
  return {"rhat_max": max(rhat.values()), "ess_min": min(ess.values()), "rhat": rhat, "ess": ess,
          "num_divergences": post.num_divergences, "num_draws": post.num_draws,
          "num_chains": post.num_chains, "converged": not problems, "problems": problems}


def _chains(post) -> dict:
  """post.draws as (C, S_c, ...) chains (the draws are chain-major)."""
  return {k: np.reshape(v, (post.num_chains, -1) + np.shape(v)[1:]) for k, v in post.draws.items()}


# ---------------------------------------------------------------------------------- ArviZ

def to_arviz(post, log_likelihood=None) -> xr.DataTree:
  """The posterior as an ArviZ DataTree: group `posterior` (dims chain, draw and, for draws with
  a task axis meta["tasks"], `task`); with `log_likelihood` (S, R), group `log_likelihood`
  (variable "obs", dims chain, draw, observation). Root attrs: meta (JSON), num_chains,
  num_divergences."""
  tasks = list(post.meta.get("tasks", []))
  chains = _chains(post)
  dims = {k: ["task"] for k, v in chains.items() if tasks and v.shape[2:] == (len(tasks),)}
  groups = {"posterior": chains}
  if log_likelihood is not None:
    ll_SxR = np.asarray(log_likelihood, np.float64)
    if ll_SxR.ndim != 2 or ll_SxR.shape[0] != post.num_draws:
      raise ValueError(f"to_arviz: log_likelihood must be (draws, observations) = "
                       f"({post.num_draws}, R), got shape {ll_SxR.shape}; use t2jax.laws.pointwise")
    groups["log_likelihood"] = {LOO_VAR: ll_SxR.reshape(post.num_chains, -1, ll_SxR.shape[1])}
    dims[LOO_VAR] = ["observation"]
  tree = arviz_base.from_dict(groups, dims=dims, coords={"task": tasks} if tasks else None)
  tree.attrs.update(meta=json.dumps(io._jsonable(post.meta)), num_chains=post.num_chains,
                    num_divergences=post.num_divergences)
  return tree


def save_netcdf(post, path: str, log_likelihood=None) -> None:
  """Writes `to_arviz(post, log_likelihood)` as netCDF-4 (h5netcdf engine), atomically."""
  data = bytes(to_arviz(post, log_likelihood).to_netcdf(engine="h5netcdf"))
  with io.atomic_open(path, "wb") as f:
    f.write(data)


# ------------------------------------------------------------------------------- PSIS-LOO

def loo(post, pointwise_SxR) -> dict:
  """PSIS-LOO (arviz-stats) from the pointwise log-likelihood (S, R) of a law's R observations at
  its S draws. Returns elpd_loo, se, p_loo, pareto_k_max, num_bad_k (observations with Pareto k
  above ArviZ's threshold good_k = min(1 − 1/log10 S, 0.7), where the estimate is unreliable),
  good_k, and elpd_i (R,) for `choose_likelihood`."""
  with warnings.catch_warnings():  # high Pareto k is reported in num_bad_k, not warned about
    warnings.simplefilter("ignore", UserWarning)
    res = arviz_stats.loo(to_arviz(post, pointwise_SxR), pointwise=True, var_name=LOO_VAR)
  k_R = np.asarray(res.pareto_k, np.float64)
  return {"elpd_loo": float(res.elpd), "se": float(res.se), "p_loo": float(res.p),
          "pareto_k_max": float(np.max(k_R)), "num_bad_k": int(np.sum(k_R > res.good_k)),
          "good_k": float(res.good_k), "elpd_i": np.asarray(res.elpd_i, np.float64)}


def choose_likelihood(loo_normal: dict, loo_student: dict, num_se: float = 2.0) -> dict:
  """Picks the loss likelihood by PSIS-LOO (`loo` of the same observations under each).

  Student-t when its elpd is higher by more than `num_se` standard errors of the paired
  difference (se = sqrt(R)·sd of the pointwise differences, Vehtari et al. 2017), or when it is
  higher at all and the Normal leaves observations with Pareto k above the threshold that the
  Student-t does not (more `num_bad_k` under the Normal): such rows are ones the Normal cannot
  absorb (a diverged rung), its elpd there is unreliable and the paired se, made of those few
  rows, is no yardstick. Otherwise the Normal, the Student-t's limit, on which the laws' error bars
  were built: a gain inside 2 se with reliable estimates is what a ladder's noise alone gives.
  Returns likelihood ("normal" | "student_t"), elpd_diff (Student-t − Normal), se_diff, reason.
  """
  normal_R, student_R = np.asarray(loo_normal["elpd_i"]), np.asarray(loo_student["elpd_i"])
  if normal_R.shape != student_R.shape or normal_R.ndim != 1 or len(normal_R) < 2:
    raise ValueError(f"choose_likelihood: loo_normal and loo_student must be on the same R >= 2 "
                     f"observations, got elpd_i shapes {normal_R.shape} and {student_R.shape}; "
                     "compute both on the same table")
  d_R = student_R - normal_R
  diff, se = float(np.sum(d_R)), float(np.sqrt(len(d_R)) * np.std(d_R, ddof=1))
  bad_normal, bad_student = int(loo_normal["num_bad_k"]), int(loo_student["num_bad_k"])
  if diff > num_se * se:
    pick, why = "student_t", f"> {num_se:g} se"
  elif diff > 0 and bad_normal > bad_student:
    pick, why = "student_t", (f"<= {num_se:g} se, but the Normal leaves {bad_normal} observations "
                              f"with Pareto k > {loo_normal['good_k']:.2f}, the Student-t "
                              f"{bad_student}")
  else:
    pick, why = "normal", f"<= {num_se:g} se"
  return {"likelihood": pick, "elpd_diff": diff, "se_diff": se,
          "reason": f"elpd(Student-t) − elpd(Normal) = {diff:.2f} ± {se:.2f} ({why})"}


# ---------------------------------------------------------------------------------- plots

def trace_rank_figure(post, path: str, sites: Optional[Sequence[str]] = None) -> str:
  """PNG (written atomically) with one row per element of each site in `sites` (default: every
  parameter not constant over the draws): its trace per chain, and the histogram per chain of its
  ranks over all draws (`arviz_stats` ranks; flat when the chains mix). Returns `path`."""
  chains = _chains(post)
  names = [n for n in chains if not np.all(post.draws[n] == post.draws[n][:1])] if sites is None \
      else list(sites)
  unknown = [n for n in names if n not in chains]
  if unknown or not names:
    raise ValueError(f"trace_rank_figure: sites={sites!r} has {unknown or 'no sites'}; pick from "
                     f"{sorted(chains)}")
  tasks = list(post.meta.get("tasks", []))
  rows = []
  for name in names:
    x = chains[name].reshape(chains[name].shape[:2] + (-1,))
    for i in range(x.shape[2]):
      label = name if x.shape[2] == 1 else f"{name}[{tasks[i] if len(tasks) == x.shape[2] else i}]"
      rows.append((label, x[..., i]))
  C, S = post.num_chains, post.num_draws // post.num_chains
  fig = matplotlib.figure.Figure(figsize=(10, 1.3 * len(rows) + 0.6))
  axes = fig.subplots(len(rows), 2, squeeze=False)
  bins = np.linspace(0, C * S, min(20, max(S // 10, 2)) + 1)
  for (label, x_CxS), (ax_trace, ax_rank) in zip(rows, axes):
    ranks_CxS = array_stats.compute_ranks(x_CxS, axis=(0, 1))
    for c in range(C):
      ax_trace.plot(x_CxS[c], lw=0.6, color=f"C{c}")
      ax_rank.hist(ranks_CxS[c], bins=bins, histtype="step", color=f"C{c}")
    ax_rank.axhline(S / (len(bins) - 1), color="k", lw=0.6, ls="--")
    ax_trace.set_ylabel(label, fontsize=8)
  axes[0, 0].set_title("trace (one colour per chain)", fontsize=9)
  axes[0, 1].set_title("rank histogram per chain (dashed: uniform)", fontsize=9)
  axes[-1, 0].set_xlabel("draw")
  axes[-1, 1].set_xlabel("rank over all chains")
  fig.tight_layout()
  with io.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=60)
  return path
