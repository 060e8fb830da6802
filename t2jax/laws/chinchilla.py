"""Chinchilla loss law L(N, D) = E + A/N^α + B/D^β: point fit, optimum and posterior.

The point fit is Hoffmann et al.'s Approach 3 (`optim.fit_power_sum` with the features N, D) from
their grid of starts; the posterior is NumPyro NUTS on the same power sum (`optim.sample_power_sum`).
Parameter dicts broadcast against the query as described in `optim`: `loss(params, N, D)` has
shape params-shape + broadcast(N, D)-shape.
"""

from typing import Optional

import jax.numpy as jnp
import numpy as np

from t2jax.laws import optim
from t2jax.laws import posterior as posterior_lib

HOFFMANN_GRID = {
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "log_A": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "log_B": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
NAMES = ("E", "A", "B", "alpha", "beta")


def fit(N, D, loss, *, delta: float = 1e-3, grid: Optional[dict] = None,
        max_iter: int = 100, pad_to: int = 0) -> optim.LawFit:
  """Hoffmann Approach 3 fit of L(N, D) = E + A/N^α + B/D^β (4,500 starts by default; `pad_to`:
  see `optim.fit_power_sum`)."""
  optim.check_positive_1d("chinchilla.fit", N=N, D=D, loss=loss)
  starts = optim.grid_starts(grid or HOFFMANN_GRID, ("e", "log_A", "log_B", "alpha", "beta"))
  logx = np.log(np.stack([np.asarray(N, np.float64), np.asarray(D, np.float64)], axis=1))
  res = optim.fit_power_sum(logx, loss, starts, delta=delta, max_iter=max_iter, pad_to=pad_to)
  e, log_A, log_B, alpha, beta = res.theta
  params = dict(E=float(np.exp(e)), A=float(np.exp(log_A)), B=float(np.exp(log_B)),
                alpha=float(alpha), beta=float(beta))
  return optim.LawFit(params, res.objective, res.num_starts, res.num_near_best)


def loss(params: dict, N, D):
  """E + A/N^α + B/D^β; shape params-shape + broadcast(N, D)-shape."""
  (N, D), q = optim.broadcast_query(N, D)
  p = optim.expand_params(params, q)
  return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


def optimum(params: dict, C):
  """Training-only optimum for C = 6ND FLOPs: (N_opt, D_opt), shape params-shape + C-shape."""
  (C,), q = optim.broadcast_query(C)
  p = optim.expand_params(params, q)
  a, b = p["alpha"], p["beta"]
  G = (a * p["A"] / (b * p["B"])) ** (1.0 / (a + b))
  N_opt = G * (C / 6.0) ** (b / (a + b))
  return N_opt, C / (6.0 * N_opt)


def _derive(e, logc, s, sigma):
  return dict(E=jnp.exp(e), A=jnp.exp(logc[..., 0]), B=jnp.exp(logc[..., 1]),
              alpha=s[..., 0], beta=s[..., 1], sigma=sigma)


def _warm_start(N, D, point: optim.LawFit) -> tuple:
  p = point.params
  theta = np.array([np.log(p["E"]), np.log(p["A"]), np.log(p["B"]), p["alpha"], p["beta"]])
  return np.log(np.stack([np.asarray(N, np.float64), np.asarray(D, np.float64)], axis=1)), theta


def map_fit(N, D, loss, query=None):
  """The posterior's MAP (bounded exponents, the priors of `sample_posterior`) from the point fit:
  params E, A, B, alpha, beta, sigma (floats). With `query` = (N_Q, D_Q): (params, sd_Q), the
  Laplace sd of the log loss there (`optim.map_power_sum`)."""
  optim.check_positive_1d("chinchilla.map_fit", N=N, D=D, loss=loss)
  logx, theta = _warm_start(N, D, fit(N, D, loss))
  query_logx = None if query is None else np.log(np.stack(
      [np.asarray(x, np.float64) for x in query], axis=1))
  return optim.map_power_sum(logx, loss, theta, _derive, query_logx=query_logx)


def sample_posterior(N, D, loss, *, num_chains: int = 2, num_warmup: int = 500,
                     num_samples: int = 500, seed: int = 0,
                     point: Optional[optim.LawFit] = None,
                     likelihood: str = "normal") -> posterior_lib.Posterior:
  """NUTS posterior of E, A, B, alpha, beta (+ sigma, the log-loss noise scale), warm-started at
  the point fit (`point`, fitted here when not given). Likelihood: log L ~ Normal(log L̂, σ), or a
  Student-t (`likelihood="student_t"`, `optim.observation`) for ladders with outlier losses."""
  optim.check_likelihood("chinchilla.sample_posterior", "likelihood", likelihood)
  optim.check_positive_1d("chinchilla.sample_posterior", N=N, D=D, loss=loss)
  point = point or fit(N, D, loss)
  logx, theta = _warm_start(N, D, point)
  return optim.sample_power_sum(logx, loss, theta, _derive, num_chains=num_chains,
                                num_warmup=num_warmup, num_samples=num_samples, seed=seed,
                                meta={"law": "chinchilla"}, likelihood=likelihood)
