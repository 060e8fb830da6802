"""Model discrepancy: how far a law's predictions can be trusted beyond the rows it was fitted on.

A fitted law is not exact. Backtests inside the fitting set (`t2jax.fit.backtest`) refit it on
part of the rows and predict the rest; their errors e_j, on the law's own scale (`SCALES`: log of
the loss or of −log pass@k, logit of pass@k), are modelled as

    e_j ~ Normal(0, noise_j² + σ(d_j)²),   σ(d) = s0 + s1·d,   s0, s1 >= 0,

with noise_j the fitted observation noise at row j and d_j the row's extrapolation distance from
the rows its fold was fitted on (`distance`: log of the D/N factor plus log of the compute factor,
each counted only beyond the fitted maximum). `fit_scale` finds (s0, s1) by maximum likelihood on
a grid (deterministic; a few dozen backtest errors do not support more than two parameters).

The discrepancy is a random effect drawn with every posterior draw: each draw s and task t get
z_st ~ N(0, 1) and the prediction at (N, D) moves by σ(d(N, D))·z_st on the law's scale (`widen`).
One z per draw (not per query) keeps a draw's predictions smooth in (N, D), so the planner's
optimum moves with it and the intervals on N*, D*, k* widen where the plan extrapolates. A
conformal widening of fixed intervals was the alternative; it cannot pass through the planner.
"""

import jax
import jax.numpy as jnp
import numpy as np

SCALES = {"chinchilla": "log", "approach1": "log", "approach2": "logit"}
KEYS = ("disc_z", "disc_s0", "disc_s1", "disc_log_tpp_max", "disc_log_compute_max")
_S0_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, 70)])
_S1_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, 70)])


def distance(N, D, log_tpp_max, log_compute_max, xp=jnp):
  """Extrapolation distance of (N, D) from fitted rows whose largest D/N and 6ND are given (logs):
  max(0, log(D/N) − log_tpp_max) + max(0, log(6ND) − log_compute_max); 0 inside the range."""
  logN, logD = xp.log(N), xp.log(D)
  return (xp.maximum(logD - logN - log_tpp_max, 0.0)
          + xp.maximum(np.log(6.0) + logN + logD - log_compute_max, 0.0))


def shrink(p, num_questions):
  """(p·Q + 1/2)/(Q + 1): a share of Q questions moved off 0 and 1 (the empirical logit's)."""
  return (np.asarray(p, np.float64) * num_questions + 0.5) / (num_questions + 1.0)


def error(scale: str, observed, predicted, num_questions=None):
  """The backtest error on a law's scale: log of observed minus log of predicted; or, for a
  share of `num_questions` questions, the empirical logit of both (`shrink`: a model that solved
  none of 100 questions is at most ~log 200 off, not infinitely)."""
  if scale == "log":
    return np.log(np.asarray(observed, np.float64)) - np.log(np.asarray(predicted, np.float64))
  logit = lambda p: np.log(shrink(p, num_questions)) - np.log1p(-shrink(p, num_questions))
  return logit(observed) - logit(predicted)


def fit_scale(error_J, distance_J, noise_J) -> dict:
  """Maximum-likelihood (s0, s1) of σ(d) = s0 + s1·d from backtest errors (see module doc), on a
  grid of 71 × 71 values in [0, 10]. Returns s0, s1, the log-likelihood and the number of points;
  with no points, s0 = s1 = 0."""
  e, d, v = (np.asarray(x, np.float64) for x in (error_J, distance_J, noise_J))
  if not e.size:
    return {"s0": 0.0, "s1": 0.0, "loglik": 0.0, "num_points": 0}
  if not (np.all(np.isfinite(e)) and np.all(d >= 0) and np.all(v >= 0)):
    raise ValueError("discrepancy.fit_scale: errors must be finite, distances and noise >= 0")
  sd = _S0_GRID[:, None, None] + _S1_GRID[None, :, None] * d  # (S0, S1, J)
  var = sd ** 2 + v ** 2
  var = np.maximum(var, 1e-12)
  loglik = -0.5 * np.sum(np.log(2 * np.pi * var) + e ** 2 / var, axis=-1)
  i, j = np.unravel_index(np.argmax(loglik), loglik.shape)
  return {"s0": float(_S0_GRID[i]), "s1": float(_S1_GRID[j]), "loglik": float(loglik[i, j]),
          "num_points": int(e.size)}


def task_scale(scale: dict, task: str) -> tuple:
  """(s0, s1) of `task` in a scale with per-task dicts (a task with no backtest points: 0, 0)."""
  return float(scale["s0"].get(task, 0.0)), float(scale["s1"].get(task, 0.0))


def draws(scale: dict, num_draws: int, tasks, seed: int) -> dict:
  """Per-draw discrepancy keys (`KEYS`), each (S, T) over `tasks`, for a law's planner draws;
  `scale` is the fit summary's `discrepancy[law]` (per-task s0, s1; the fitted range's logs)."""
  z = np.random.default_rng(seed).standard_normal((num_draws, len(tasks)))
  s0_T, s1_T = np.array([task_scale(scale, t) for t in tasks]).reshape(len(tasks), 2).T
  full = lambda x: np.broadcast_to(np.asarray(x, np.float64), z.shape).copy()
  return {"disc_z": z, "disc_s0": full(s0_T), "disc_s1": full(s1_T),
          "disc_log_tpp_max": full(scale["log_tpp_max"]),
          "disc_log_compute_max": full(scale["log_compute_max"])}


def widen(scale: str, value, params: dict, N, D):
  """`value` (params-shape + query-shape, e.g. (T, ...) for one draw) moved by its draw's
  discrepancy σ(d(N, D))·z on `scale` ("log" or "logit"); unchanged when `params` has no
  discrepancy keys (a fit without backtests)."""
  if "disc_z" not in params:
    return value
  q = jnp.ndim(value) - jnp.ndim(params["disc_z"])
  p = {key: jnp.reshape(params[key], jnp.shape(params[key]) + (1,) * q) for key in KEYS}
  d = distance(N, D, p["disc_log_tpp_max"], p["disc_log_compute_max"])
  return move(scale, value, (p["disc_s0"] + p["disc_s1"] * d) * p["disc_z"])


def move(scale: str, value, shift, xp=jnp):
  """`value` moved by `shift` on `scale`: value·exp(shift) ("log"), or shift added to the logit of
  value clipped into (0, 1) ("logit"); with xp=np for numpy arrays (held-out scoring)."""
  if scale == "log":
    return value * xp.exp(shift)
  v = xp.clip(value, 1e-12, 1 - 1e-12)
  x = xp.log(v) - xp.log1p(-v) + shift
  return jax.nn.sigmoid(x) if xp is jnp else 1.0 / (1.0 + np.exp(-x))


def sd(scale: dict, task: str, N, D) -> np.ndarray:
  """σ(d) = s0 + s1·d of `task` at (N, D), from a law's scale (the fit summary's
  `discrepancy[law]`)."""
  d = distance(np.asarray(N, np.float64), np.asarray(D, np.float64), scale["log_tpp_max"],
               scale["log_compute_max"], xp=np)
  s0, s1 = task_scale(scale, task)
  return s0 + s1 * d
