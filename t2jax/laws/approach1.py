"""Approach 1 (loss-based T2): L̂(N, D, k) = E + A/N^α + B/D^β + G/k^γ.

Fitted, per task, to T(k) = E_i[−log pass@k_i], the average over questions on a grid of k. The fit
is the Chinchilla machinery (`optim.fit_power_sum`, Huber on log-loss, batched L-BFGS from a grid)
with k as a third feature; the posterior is NumPyro NUTS on the same power sum (log L̂ observed
with Normal noise), warm-started at the point fit.

The target per model × task (`table_from_results`) is `targets.task_targets`: from samples, the
Beta-binomial MLE over the model's questions integrated (consistent in n, unlike a per-question
posterior); from gold NLLs, p_i = exp(−nll_i) exactly. A model whose samples do not identify T(k)
(never solved, always solved, no spread) is censored: left out of its task's table and listed.
"""

import dataclasses
from typing import Optional

import jax.numpy as jnp
import numpy as np

from t2jax.laws import optim
from t2jax.laws import posterior as posterior_lib
from t2jax.laws import table as table_lib
from t2jax.laws import targets as targets_lib

# A thinned Hoffmann grid over the seven parameters (2,592 starts; the full one would be 135,000).
GRID = {
    "e": (-1.0, 0.0, 1.0),
    "log_A": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "log_B": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "log_G": (-1.0, 1.0),
    "alpha": (0.0, 1.0),
    "beta": (0.0, 1.0),
    "gamma": (0.5, 1.5),
}
_THETA_NAMES = ("e", "log_A", "log_B", "log_G", "alpha", "beta", "gamma")


@dataclasses.dataclass(frozen=True)
class Approach1Table:
  """One task's fitting table: one row per identified model × k, arrays of shape (R,)."""
  task: str
  model_id: np.ndarray  # str
  N: np.ndarray
  D: np.ndarray
  k: np.ndarray
  loss: np.ndarray  # T(k): the model's mean over the task's questions of −log pass@k_i
  censored: dict  # model_id -> status ("no_success", "all_success", "no_spread"): left out


def default_k_grid(n_max: int) -> np.ndarray:
  """1, 2, 4, … up to n_max."""
  return 2 ** np.arange(int(np.floor(np.log2(n_max))) + 1)


def table_from_results(results: table_lib.ResultsTable, *, k_grid: Optional[np.ndarray] = None,
                       source: str = "samples") -> dict:
  """Per task: the Approach-1 table of T(k) per model (`targets.task_targets` from `source`,
  "samples" or "nll"). Returns {task: table}; a task whose models are all censored has no rows.

  Without `k_grid`, a task's grid is 1, 2, 4, … up to the smallest n among its sampled
  questions, so every point is backed by at least k samples per question.
  """
  tables = {}
  for task in results.tasks:
    rows = results.select(results.task == task)
    if k_grid is None:
      if not rows.sampled.any():
        raise ValueError(f"{results.source}: task {task!r} has no sampled questions (n, c), so "
                         "there is no n to bound k; pass k_grid explicitly")
      ks = default_k_grid(int(rows.n[rows.sampled].min())).astype(np.float64)
    else:
      ks = np.asarray(k_grid, np.float64)
      if ks.ndim != 1 or not np.all(np.isfinite(ks) & (ks >= 1)):
        raise ValueError(f"k_grid must be a 1-D array of k >= 1, got {k_grid!r}")
    t = targets_lib.task_targets(rows.model_id, rows.n, rows.c, rows.nll, ks, source=source)
    keep_M = t.status_G == "ok"
    first_M = np.array([np.flatnonzero(rows.model_id == m)[0] for m in t.groups[keep_M]], np.int64)
    tables[task] = Approach1Table(
        task=task, model_id=np.repeat(t.groups[keep_M], len(ks)),
        N=np.repeat(rows.N[first_M], len(ks)), D=np.repeat(rows.D[first_M], len(ks)),
        k=np.tile(ks, len(first_M)), loss=t.mean_GxK[keep_M].ravel(),
        censored=dict(zip(t.groups[~keep_M].tolist(), t.status_G[~keep_M].tolist())))
  return tables


def _logx(N, D, k):
  return np.log(np.stack([np.asarray(v, np.float64) for v in (N, D, k)], axis=1))


def fit(N, D, k, loss, *, delta: float = 1e-3, grid: Optional[dict] = None,
        max_iter: int = 100) -> optim.LawFit:
  """Huber/L-BFGS fit of L̂(N, D, k) from every start of `grid` (default `GRID`)."""
  optim.check_positive_1d("approach1.fit", N=N, D=D, k=k, loss=loss)
  starts = optim.grid_starts(grid or GRID, _THETA_NAMES)
  res = optim.fit_power_sum(_logx(N, D, k), loss, starts, delta=delta, max_iter=max_iter)
  e, log_A, log_B, log_G, alpha, beta, gamma = res.theta
  with np.errstate(over="ignore"):  # a dropped term's coefficient may overflow: see sample_posterior
    params = dict(E=np.exp(e), A=np.exp(log_A), B=np.exp(log_B), G=np.exp(log_G), alpha=alpha,
                  beta=beta, gamma=gamma)
  return optim.LawFit({k_: float(v) for k_, v in params.items()}, res.objective, res.num_starts,
                      res.num_near_best)


def neg_log_passk(params: dict, N, D, k):
  """L̂(N, D, k); shape params-shape + broadcast(N, D, k)-shape."""
  (N, D, k), q = optim.broadcast_query(N, D, k)
  p = optim.expand_params(params, q)
  return (p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
          + p["G"] * k ** -p["gamma"])


def passk(params: dict, N, D, k):
  """exp(−L̂(N, D, k)): the pass@k the law predicts (a geometric mean over questions)."""
  return jnp.exp(-neg_log_passk(params, N, D, k))


def task_mean_passk(params: dict, N, D, k):
  """Mean over tasks of exp(−L̂_t(N, D, k)) for params with a leading task axis (T,): the
  planner's objective (one draw of every task's params at a time)."""
  return jnp.mean(passk(params, N, D, k), axis=0)


def warm_start(p: dict, logx_RxF: np.ndarray, loss) -> np.ndarray:
  """NUTS start (log E, log coefficients, exponents) from point-fit params `p`.

  Each term keeps its fitted value at the data's centre with its exponent clipped into the
  posterior's range (0, 2); a term the point fit dropped (coefficient 0 or overflowing, or an
  exponent in the thousands on a few rungs) starts at 1e-6 of the smallest loss.
  """
  center_F = logx_RxF.mean(axis=0)
  s_F = np.array([p["alpha"], p["beta"], p["gamma"]])
  with np.errstate(divide="ignore", invalid="ignore"):  # E = 0 is clipped by sample_power_sum
    log_e, log_c_F = np.log(p["E"]), np.log([p["A"], p["B"], p["G"]])
    log_term_F = log_c_F - s_F * center_F
  floor = np.log(1e-6 * np.min(loss))
  log_term_F = np.where(np.isfinite(log_term_F), np.maximum(log_term_F, floor), floor)
  s_F = np.clip(s_F, 0.01, 1.95)
  return np.concatenate([[log_e], log_term_F + s_F * center_F, s_F])


def _derive(e, logc, s, sigma):
  return dict(E=jnp.exp(e), A=jnp.exp(logc[..., 0]), B=jnp.exp(logc[..., 1]),
              G=jnp.exp(logc[..., 2]), alpha=s[..., 0], beta=s[..., 1], gamma=s[..., 2],
              sigma=sigma)


def map_fit(N, D, k, loss, query=None):
  """The posterior's MAP (bounded exponents, the priors of `sample_posterior`) from the point fit:
  params E, A, B, G, alpha, beta, gamma, sigma (floats). With `query` = (N_Q, D_Q, k_Q):
  (params, sd_Q), the Laplace sd of the log loss there (`optim.map_power_sum`)."""
  optim.check_positive_1d("approach1.map_fit", N=N, D=D, k=k, loss=loss)
  logx = _logx(N, D, k)
  return optim.map_power_sum(logx, loss, warm_start(fit(N, D, k, loss).params, logx, loss), _derive,
                             query_logx=None if query is None else _logx(*query))


def sample_posterior(N, D, k, loss, *, num_chains: int = 2, num_warmup: int = 500,
                     num_samples: int = 500, seed: int = 0,
                     point: Optional[optim.LawFit] = None,
                     likelihood: str = "normal") -> posterior_lib.Posterior:
  """NUTS posterior of E, A, B, G, alpha, beta, gamma (+ sigma, the log-loss noise scale);
  `likelihood`: "normal" or "student_t" (`optim.observation`)."""
  optim.check_likelihood("approach1.sample_posterior", "likelihood", likelihood)
  optim.check_positive_1d("approach1.sample_posterior", N=N, D=D, k=k, loss=loss)
  point = point or fit(N, D, k, loss)
  logx = _logx(N, D, k)
  theta = warm_start(point.params, logx, loss)
  return optim.sample_power_sum(logx, loss, theta, _derive, num_chains=num_chains,
                                num_warmup=num_warmup, num_samples=num_samples, seed=seed,
                                meta={"law": "approach1"}, likelihood=likelihood)
