"""Model discrepancy: how far a law's predictions can be trusted beyond the rows it was fitted on.

A fitted law is not exact. Backtests inside the fitting set (`t2jax.fit.backtest`) refit it on
part of the rows and predict the rest; their errors e_j, on the law's own scale (`SCALES`: log of
the loss or of −log pass@k, logit of pass@k), are modelled as

    e_j ~ Normal(0, noise_j² + u_j² + σ(d_j)²),   σ(d) = s0 + s1·d,   s0, s1 >= 0,

with noise_j the observation noise at row j, u_j the fold fit's own parameter uncertainty there
(its Laplace sd: a fold fitted on fewer rows is less sure, and the final posterior carries its own
parameter uncertainty, so σ(d) is what neither explains: the law's misfit, and any shortfall of
the fold's intervals), and d_j the row's extrapolation distance from
the rows its fold was fitted on (`distance`): per axis (D/N and training compute 6ND), the log
factor beyond the fitted maximum divided by span^ρ, the log-span of the fitted range (floored at
log 2), summed over both axes. ρ = 0 counts log factors as they are; ρ = 1 measures the horizon in
units of the fitted span, so a fold fitted on a narrow range (the first rolling-origin folds)
extrapolating by a factor F is further out than the final fit extrapolating by F from its wider
range. `fit_law_scale` finds ρ in {0, 1/4, …, 1} (one per law) and (s0, s1) per task by maximum
likelihood on a grid (deterministic; a few dozen backtest errors do not support more).

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
RANGE_KEYS = ("log_tpp_max", "log_compute_max", "tpp_span", "compute_span")
KEYS = ("disc_z", "disc_s0", "disc_s1", "disc_rho") + tuple(f"disc_{k}" for k in RANGE_KEYS)
SPAN_MIN = float(np.log(2.0))  # a range narrower than a factor of 2 counts as one of 2
RHO_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
_S0_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, 70)])
_S1_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 10.0, 70)])


def fitted_range(N, D) -> dict:
  """The range keys (`RANGE_KEYS`) of fitted rows (N, D): logs of the largest D/N and 6ND, and
  the log-span of each (at least `SPAN_MIN`)."""
  tpp, compute = np.asarray(D, np.float64) / N, 6.0 * np.asarray(N, np.float64) * D
  return range_from_bounds(tpp.min(), tpp.max(), compute.min(), compute.max())


def range_from_bounds(tpp_min, tpp_max, compute_min, compute_max) -> dict:
  """`fitted_range` from the bounds of the fitted D/N and 6ND."""
  return {"log_tpp_max": float(np.log(tpp_max)), "log_compute_max": float(np.log(compute_max)),
          "tpp_span": max(float(np.log(tpp_max / tpp_min)), SPAN_MIN),
          "compute_span": max(float(np.log(compute_max / compute_min)), SPAN_MIN)}


def excess(N, D, log_tpp_max, log_compute_max, xp=jnp) -> tuple:
  """(log D/N, log 6ND) of (N, D) beyond the fitted maxima, each >= 0 (0 inside the range)."""
  logN, logD = xp.log(N), xp.log(D)
  return (xp.maximum(logD - logN - log_tpp_max, 0.0),
          xp.maximum(np.log(6.0) + logN + logD - log_compute_max, 0.0))


def scaled(tpp_excess, compute_excess, tpp_span, compute_span, rho):
  """The distance of log excesses: tpp_excess/tpp_span^ρ + compute_excess/compute_span^ρ."""
  return tpp_excess / tpp_span ** rho + compute_excess / compute_span ** rho


def distance(N, D, log_tpp_max, log_compute_max, tpp_span=1.0, compute_span=1.0, rho=0.0,
             xp=jnp):
  """Extrapolation distance of (N, D) from fitted rows (module doc); 0 inside the range. With the
  defaults (ρ = 0), max(0, log(D/N) − log_tpp_max) + max(0, log(6ND) − log_compute_max)."""
  return scaled(*excess(N, D, log_tpp_max, log_compute_max, xp), tpp_span, compute_span, rho)


def scale_distance(scale: dict, N, D, xp=np):
  """`distance` of (N, D) from a law's scale (the fit summary's `discrepancy[law]`; a scale written
  before ρ was fitted counts log factors, ρ = 0)."""
  return distance(N, D, scale["log_tpp_max"], scale["log_compute_max"], scale.get("tpp_span", 1.0),
                  scale.get("compute_span", 1.0), scale.get("rho", 0.0), xp=xp)


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
  """Maximum-likelihood (s0, s1) of σ(d) = s0 + s1·d from backtest errors (see module doc; noise_J
  is each error's known sd, observation and fold fit together), on a grid of 71 × 71 values in
  [0, 10]. Returns s0, s1, the log-likelihood and the number of points;
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


def fit_law_scale(groups: dict) -> dict:
  """ρ (one per law) and (s0, s1) per group by maximum likelihood (module doc). `groups` maps a
  task to its backtest points' (error_J, tpp_excess_J, compute_excess_J, tpp_span_J,
  compute_span_J, noise_J). Returns {"rho": ρ, "fits": {group: `fit_scale` at that ρ}}; the
  smallest ρ among equal likelihoods (with no points, 0)."""
  best = None
  for rho in RHO_GRID:
    fits = {g: fit_scale(e, scaled(te, ce, ts, cs, rho), v)
            for g, (e, te, ce, ts, cs, v) in ((g, tuple(np.asarray(x, np.float64) for x in p))
                                              for g, p in groups.items())}
    loglik = sum(f["loglik"] for f in fits.values())
    if best is None or loglik > best[0] + 1e-9:
      best = (loglik, rho, fits)
  return {"rho": best[1], "fits": best[2]}


def task_scale(scale: dict, task: str) -> tuple:
  """(s0, s1) of `task` in a scale with per-task dicts (a task with no backtest points: 0, 0)."""
  return float(scale["s0"].get(task, 0.0)), float(scale["s1"].get(task, 0.0))


def draws(scale: dict, num_draws: int, tasks, seed: int) -> dict:
  """Per-draw discrepancy keys (`KEYS`), each (S, T) over `tasks`, for a law's planner draws;
  `scale` is the fit summary's `discrepancy[law]` (per-task s0, s1; the fitted range's logs)."""
  z = np.random.default_rng(seed).standard_normal((num_draws, len(tasks)))
  s0_T, s1_T = np.array([task_scale(scale, t) for t in tasks]).reshape(len(tasks), 2).T
  full = lambda x: np.broadcast_to(np.asarray(x, np.float64), z.shape).copy()
  defaults = {"tpp_span": 1.0, "compute_span": 1.0}
  return dict({"disc_z": z, "disc_s0": full(s0_T), "disc_s1": full(s1_T),
               "disc_rho": full(scale.get("rho", 0.0))},
              **{f"disc_{k}": full(scale.get(k, defaults.get(k))) for k in RANGE_KEYS})


def widen(scale: str, value, params: dict, N, D):
  """`value` (params-shape + query-shape, e.g. (T, ...) for one draw) moved by its draw's
  discrepancy σ(d(N, D))·z on `scale` ("log" or "logit"); unchanged when `params` has no
  discrepancy keys (a fit without backtests)."""
  if "disc_z" not in params:
    return value
  q = jnp.ndim(value) - jnp.ndim(params["disc_z"])
  p = {key: jnp.reshape(params[key], jnp.shape(params[key]) + (1,) * q) for key in KEYS}
  d = distance(N, D, *(p[f"disc_{k}"] for k in RANGE_KEYS), p["disc_rho"])
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
  d = scale_distance(scale, np.asarray(N, np.float64), np.asarray(D, np.float64))
  s0, s1 = task_scale(scale, task)
  return s0 + s1 * d
