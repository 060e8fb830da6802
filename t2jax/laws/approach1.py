"""Approach 1 (loss-based T2): L̂(N, D, k) = E + A/N^α + B/D^β + G/k^γ.

Fitted, per task, to the average over questions of −log pass@k_i on a grid of k. The fit is the
Chinchilla machinery (`optim.fit_power_sum`, Huber on log-loss, batched L-BFGS from a grid) with
k as a third feature; the posterior is NumPyro NUTS on the same power sum (log L̂ observed
with Normal noise), warm-started at the point fit.

Per-question pass@k_i (`question_neg_log_passk`):
- sampled questions (n ≥ 1): the posterior mean of 1 − (1 − p)^k under the Jeffreys posterior
  p ~ Beta(c + ½, n − c + ½). The plug-in (c/n) and the unbiased estimator both give pass@k = 0
  whenever c = 0, which makes −log pass@k infinite for every question a model never solved (the
  common case for small models); the Jeffreys mean is finite, within O(1/n) of the unbiased
  estimator when c is not small, and uses the same Beta algebra as Approach 2.
- NLL-only questions: p_i = exp(−nll_i) and pass@k_i = 1 − (1 − p_i)^k.
"""

import dataclasses
from typing import Optional

import jax.numpy as jnp
import numpy as np
from scipy import special

from t2jax.laws import optim
from t2jax.laws import posterior as posterior_lib
from t2jax.laws import table as table_lib

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
  """One task's fitting table: one row per model × k, arrays of shape (R,)."""
  task: str
  N: np.ndarray
  D: np.ndarray
  k: np.ndarray
  loss: np.ndarray  # mean over the task's questions of −log pass@k_i


def default_k_grid(n_max: int) -> np.ndarray:
  """1, 2, 4, … up to n_max."""
  return 2 ** np.arange(int(np.floor(np.log2(n_max))) + 1)


def question_neg_log_passk(n_Q, c_Q, nll_Q, k_K) -> np.ndarray:
  """−log pass@k per question and k, shape (Q, K); see the module docstring for the estimators."""
  n_Q, c_Q, nll_Q = (np.asarray(v, np.float64)[:, None] for v in (n_Q, c_Q, nll_Q))
  k_K = np.asarray(k_K, np.float64)[None, :]
  a, b = c_Q + 0.5, n_Q - c_Q + 0.5
  log_fail_sampled = special.betaln(a, b + k_K) - special.betaln(a, b)
  with np.errstate(divide="ignore", invalid="ignore"):
    log_fail_nll = k_K * np.log1p(-np.exp(-nll_Q))
  log_fail = np.where(n_Q > 0, log_fail_sampled, log_fail_nll)
  return -np.log(-np.expm1(log_fail))


def table_from_results(results: table_lib.ResultsTable, *,
                       k_grid: Optional[np.ndarray] = None) -> dict:
  """Per task: the Approach-1 table (model × k means of −log pass@k_i). Returns {task: table}.

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
      ks = default_k_grid(int(rows.n[rows.sampled].min()))
    else:
      ks = np.asarray(k_grid, np.float64)
      if ks.ndim != 1 or not np.all(np.isfinite(ks) & (ks >= 1)):
        raise ValueError(f"k_grid must be a 1-D array of k >= 1, got {k_grid!r}")
    nlp_QxK = question_neg_log_passk(rows.n, rows.c, rows.nll, ks)
    models, model_Q = np.unique(rows.model_id, return_inverse=True)
    counts_M = np.bincount(model_Q, minlength=len(models))
    mean_MxK = np.stack([np.bincount(model_Q, nlp_QxK[:, j], len(models)) for j in range(len(ks))],
                        axis=1) / counts_M[:, None]
    first_M = np.array([np.flatnonzero(model_Q == m)[0] for m in range(len(models))])
    tables[task] = Approach1Table(
        task=task, N=np.repeat(rows.N[first_M], len(ks)), D=np.repeat(rows.D[first_M], len(ks)),
        k=np.tile(np.asarray(ks, np.float64), len(models)), loss=mean_MxK.ravel())
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


def sample_posterior(N, D, k, loss, *, num_chains: int = 2, num_warmup: int = 500,
                     num_samples: int = 500, seed: int = 0,
                     point: Optional[optim.LawFit] = None) -> posterior_lib.Posterior:
  """NUTS posterior of E, A, B, G, alpha, beta, gamma (+ sigma, the log-loss noise)."""
  optim.check_positive_1d("approach1.sample_posterior", N=N, D=D, k=k, loss=loss)
  point = point or fit(N, D, k, loss)
  p = point.params
  theta = np.array([np.log(p["E"]), np.log(p["A"]), np.log(p["B"]), np.log(p["G"]), p["alpha"],
                    p["beta"], p["gamma"]])

  def derive(e, logc, s, sigma):
    return dict(E=jnp.exp(e), A=jnp.exp(logc[..., 0]), B=jnp.exp(logc[..., 1]),
                G=jnp.exp(logc[..., 2]), alpha=s[..., 0], beta=s[..., 1], gamma=s[..., 2],
                sigma=sigma)

  return optim.sample_power_sum(_logx(N, D, k), loss, theta, derive, num_chains=num_chains,
                                num_warmup=num_warmup, num_samples=num_samples, seed=seed,
                                meta={"law": "approach1"})
