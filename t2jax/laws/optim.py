"""Fitting machinery shared by the laws: batched L-BFGS, power-sum fits, MAP search, NUTS warm starts.

A *power sum* is L = e^e + Σ_f exp(log C_f − s_f log x_f) over features x_f (Chinchilla: N, D;
Approach 1: N, D, k). `fit_power_sum` is Hoffmann et al.'s Approach 3 for any power sum: Huber(δ)
on log L − LSE(...), L-BFGS from a grid of starts, best kept. All starts run at once in one
jitted, vmapped float32 L-BFGS (`lbfgs`); the best few are then polished by the same batched
L-BFGS in float64. (SciPy's L-BFGS-B is avoided in the hot path: its BLAS threads contend with
JAX's on small CPU machines and made each polish ~20x slower.) `sample_power_sum` draws its NUTS
posterior, warm-started at the MAP (`map_sites`).

Parameter dicts map names to floats or arrays; arrays carry leading axes (e.g. posterior draws
S, or tasks T) and broadcast against the query: a law's value has shape
params-shape + broadcast(query)-shape (`expand_params`, `broadcast_query`).
"""

import dataclasses
import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer import util as infer_util

from t2jax.laws import posterior as posterior_lib


# ----------------------------------------------------------------------------- batched L-BFGS

def _two_loop(g_P, S_MxP, Y_MxP, rho_M, k):
  """L-BFGS direction −H·g from a ring buffer of the last M (s, y) pairs; k pairs stored so far.

  Unfilled slots have rho = 0 and drop out of both loops.
  """
  m = rho_M.shape[0]

  def newest_first(i, carry):
    q, a_M = carry
    j = (k - 1 - i) % m
    a = rho_M[j] * jnp.dot(S_MxP[j], q)
    return q - a * Y_MxP[j], a_M.at[j].set(a)

  q, a_M = lax.fori_loop(0, m, newest_first, (g_P, jnp.zeros_like(rho_M)))
  last = (k - 1) % m
  yy = jnp.dot(Y_MxP[last], Y_MxP[last])
  gamma = jnp.where(k > 0, jnp.dot(S_MxP[last], Y_MxP[last]) / jnp.where(yy > 0, yy, 1.0),
                    1.0 / jnp.maximum(jnp.linalg.norm(g_P), 1.0))

  def oldest_first(i, r):
    j = (k - m + i) % m
    return r + S_MxP[j] * (a_M[j] - rho_M[j] * jnp.dot(Y_MxP[j], r))

  return -lax.fori_loop(0, m, oldest_first, gamma * q)


def lbfgs(fun: Callable, x0_P, *, max_iter: int, memory: int = 10, c1: float = 1e-4):
  """Minimises `fun` from `x0_P`; returns (x_P, f, iterations). Jittable and vmappable.

  Every iteration costs exactly one value-and-gradient evaluation, so a vmapped batch of starts
  never waits on another start's line search: a step that fails the Armijo test is not taken
  and the next iteration retries with half the step; an accepted step resets it to 1. Stops at
  `max_iter`, or when the step falls below 1e-10 (no further progress at this precision).
  """
  value_and_grad = jax.value_and_grad(fun)
  dtype = x0_P.dtype
  f0, g0 = value_and_grad(x0_P)

  def body(st):
    x, f, g, t, k = st["x"], st["f"], st["g"], st["t"], st["k"]
    d = _two_loop(g, st["S"], st["Y"], st["rho"], k)
    gd = jnp.dot(g, d)
    descent = gd < 0
    d, gd = jnp.where(descent, d, -g), jnp.where(descent, gd, -jnp.dot(g, g))
    f_new, g_new = value_and_grad(x + t * d)
    ok = f_new <= f + c1 * t * gd  # False for NaN
    s, y = t * d, g_new - g
    sy = jnp.dot(s, y)
    store = ok & (sy > 1e-10 * jnp.dot(y, y))
    j = k % memory
    t_next = jnp.where(ok, 1.0, 0.5 * t).astype(dtype)
    return dict(
        x=jnp.where(ok, x + s, x), f=jnp.where(ok, f_new, f), g=jnp.where(ok, g_new, g),
        S=jnp.where(store, st["S"].at[j].set(s), st["S"]),
        Y=jnp.where(store, st["Y"].at[j].set(y), st["Y"]),
        rho=jnp.where(store, st["rho"].at[j].set(1.0 / jnp.where(store, sy, 1.0)), st["rho"]),
        k=k + store.astype(k.dtype), t=t_next, it=st["it"] + 1)

  def cond(st):
    return (st["it"] < max_iter) & (st["t"] >= 1e-10)

  P = x0_P.shape[0]
  st = dict(x=x0_P, f=f0, g=g0, S=jnp.zeros((memory, P), dtype), Y=jnp.zeros((memory, P), dtype),
            rho=jnp.zeros((memory,), dtype), k=jnp.array(0), t=jnp.array(1.0, dtype),
            it=jnp.array(0))
  st = lax.while_loop(cond, body, st)
  return st["x"], st["f"], st["it"]


# ------------------------------------------------------------------------ power-sum law fits

def power_sum_log(theta_P, logx_RxF):
  """log(e^e + Σ_f exp(logc_f − s_f·logx_f)) with theta = [e, logc_1..F, s_1..F]."""
  F = logx_RxF.shape[-1]
  total = jnp.exp(theta_P[0])
  for f in range(F):  # unrolled: XLA fuses it into one pass over the rows
    total = total + jnp.exp(theta_P[1 + f] - theta_P[1 + F + f] * logx_RxF[..., f])
  return jnp.log(total)


def huber(r, delta):
  a = jnp.abs(r)
  return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def power_sum_objective(theta_P, logx_RxF, logy_R, delta, weight_R=None):
  """Mean Huber(δ) loss of the log residuals of a power sum: what `fit_power_sum` minimises
  (`weight_R`: 1 for a row, 0 for padding)."""
  h_R = huber(logy_R - power_sum_log(theta_P, logx_RxF), delta)
  if weight_R is None:
    return jnp.mean(h_R)
  return jnp.sum(weight_R * h_R) / jnp.sum(weight_R)


def bucket(n: int) -> int:
  """The padded size of n rows: the next power of 2, at least 8. Jitted fits compile once per
  shape, so backtest folds (subsets of every size) share a few compilations instead of one each."""
  return max(8, 1 << (int(n) - 1).bit_length())


def _pad_rows(x, size: int):
  """`x` (R, ...) with its first row repeated up to `size` rows."""
  x = np.asarray(x)
  return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def bucket_pad(x, pad_to: int = 0):
  """`x` (R, ...) padded by copies of its first row to `bucket(max(R, pad_to))` rows."""
  return _pad_rows(x, bucket(max(len(x), pad_to)))


@functools.lru_cache(maxsize=None)
def _batched_lbfgs(max_iter: int):
  """Jitted L-BFGS of every start at once (one compile per max_iter, dtype and data shape)."""
  def run(starts_SxP, logx_RxF, logy_R, weight_R, delta):
    one = lambda th: lbfgs(lambda x: power_sum_objective(x, logx_RxF, logy_R, delta, weight_R), th,
                           max_iter=max_iter)
    return jax.vmap(one)(starts_SxP)
  return jax.jit(run)


def grid_starts(grid: dict, names: tuple) -> np.ndarray:
  """Cartesian product of `grid[name]` values, columns in `names` order: (S, P)."""
  missing = [n for n in names if n not in grid]
  if missing:
    raise ValueError(f"grid is missing {missing}; give values for every one of {list(names)}")
  return np.array(list(itertools.product(*(grid[n] for n in names))), np.float64)


@dataclasses.dataclass(frozen=True)
class PowerSumFit:
  theta: np.ndarray  # [e, logc_1..F, s_1..F]
  objective: float  # mean Huber loss at theta
  num_starts: int
  num_near_best: int  # starts whose float32 optimum is within 1e-4 (relative) of the best


@dataclasses.dataclass(frozen=True)
class LawFit:
  """A law's point fit: its parameters by name (floats) and the power-sum fit's statistics."""
  params: dict
  objective: float
  num_starts: int
  num_near_best: int


def fit_power_sum(logx_RxF, y_R, starts_SxP, *, delta: float = 1e-3, max_iter: int = 100,
                  polish: int = 8, polish_iter: int = 300, pad_to: int = 0) -> PowerSumFit:
  """Huber fit of a power sum from every start at once (float32, `max_iter` iterations), then
  `polish_iter` float64 iterations from the best `polish` results; the best is kept. Rows are
  padded (weight 0) to `bucket(max(rows, pad_to))`: fits of subsets given one `pad_to` share a
  compilation."""
  logx_RxF = np.asarray(logx_RxF, np.float64)
  logy_R = np.log(np.asarray(y_R, np.float64))
  starts_SxP = np.asarray(starts_SxP, np.float64)
  if starts_SxP.shape[1] != 1 + 2 * logx_RxF.shape[1]:
    raise ValueError(f"starts have {starts_SxP.shape[1]} columns; a power sum of "
                     f"{logx_RxF.shape[1]} features needs {1 + 2 * logx_RxF.shape[1]}")
  size = bucket(max(len(logy_R), pad_to))
  weight_R = (np.arange(size) < len(logy_R)).astype(np.float64)
  logx_RxF, logy_R = _pad_rows(logx_RxF, size), _pad_rows(logy_R, size)
  theta_SxP, f_S, _ = _batched_lbfgs(max_iter)(jnp.asarray(starts_SxP, jnp.float32),
                                        jnp.asarray(logx_RxF, jnp.float32),
                                        jnp.asarray(logy_R, jnp.float32),
                                        jnp.asarray(weight_R, jnp.float32), jnp.float32(delta))
  f_S = np.nan_to_num(np.asarray(f_S, np.float64), nan=np.inf)
  theta_SxP = np.asarray(theta_SxP, np.float64)
  if not np.isfinite(f_S).any():
    raise ValueError("fit_power_sum: every start gave a non-finite objective; check the data "
                     "(positive, finite y) and the grid")
  order = np.argsort(f_S)
  near = int(np.sum(f_S <= f_S[order[0]] * (1 + 1e-4)))
  finite = order[:polish][np.isfinite(f_S[order[:polish]])]
  with jax.enable_x64(True):
    theta_KxP, f_K, _ = _batched_lbfgs(polish_iter)(
        jnp.asarray(theta_SxP[finite]), jnp.asarray(logx_RxF), jnp.asarray(logy_R),
        jnp.asarray(weight_R), jnp.float64(delta))
    theta_KxP, f_K = np.asarray(theta_KxP), np.nan_to_num(np.asarray(f_K), nan=np.inf)
  best = int(np.argmin(f_K))
  return PowerSumFit(theta_KxP[best], float(f_K[best]), len(starts_SxP), near)


def logit(p):
  return np.log(p) - np.log1p(-p)


LOGIT_S0 = float(logit(0.2))


def amp_prior_center(logy_R):
  """The centre of `power_sum_model`'s prior on each term's log size at the data's centre."""
  return jnp.median(logy_R) - 1.0


def _bounded(logy_R, logit_E, logit_s):
  """(log E, s): E = min y · sigmoid(logit_E) below the lowest observed y, s = 2·sigmoid(logit_s)
  in (0, 2). Bounding both removes the funnels (E → 0 with log E → −∞ where the likelihood is
  flat; runaway exponents with huge amplitudes) that made NUTS diverge on weak ladders."""
  return jnp.min(logy_R) + jax.nn.log_sigmoid(logit_E), 2.0 * jax.nn.sigmoid(logit_s)


# Observation likelihoods of the loss-type observations (log L ~ f(log L̂, σ)).
LIKELIHOODS = ("normal", "student_t")
# Student-t degrees of freedom, fixed (ours). A ladder has 5-100 loss observations per law, too
# few to identify ν: a sampled ν would echo its prior and add a ν-σ funnel to NUTS's geometry.
# ν = 4 is the usual fixed robust choice (Gelman et al., BDA3 §17.2; Lange et al. 1989): tails
# heavy enough that one diverged rung sits at a few scales without dragging the fit, variance
# still finite, and close to the normal within ±2σ. σ is then the scale; the sd is σ·√2.
STUDENT_T_DF = 4.0


def check_likelihood(caller: str, argument: str, value: str) -> str:
  """Returns `value` if it names a likelihood in `LIKELIHOODS`, else raises naming `argument`."""
  if value not in LIKELIHOODS:
    raise ValueError(f"{caller}: {argument}={value!r}; use one of {list(LIKELIHOODS)} ('student_t' "
                     "for ladders with outlier losses, e.g. a diverged or badly tuned rung)")
  return value


def observation(likelihood: str, loc, scale) -> dist.Distribution:
  """The law of a log-loss observation: Normal(loc, scale) or StudentT(STUDENT_T_DF, loc, scale)."""
  if likelihood == "normal":
    return dist.Normal(loc, scale)
  return dist.StudentT(STUDENT_T_DF, loc, scale)


def power_sum_model(logx_RxF, logy_R, center_F, likelihood: str = "normal"):
  """NumPyro model: log y ~ `observation(likelihood, log power sum, σ)`, weakly informative priors.

  Sites (all unconstrained): `logit_E` (E = min y · sigmoid); `amp` (F,), the log of each term at
  the data's centre (log C_f − s_f·centre_f, which decorrelates C_f from s_f); `logit_s` (F,),
  s_f = 2·sigmoid; `log_sigma`. Priors: logit_E ~ N(0, 1.5), amp ~ N(log median y − 1, 2),
  logit_s ~ N(logit 0.2, 1) (s median 0.4, 95% in (0.06, 1.6)), log σ ~ N(log 0.02, 1).
  """
  F = logx_RxF.shape[-1]
  logit_E = numpyro.sample("logit_E", dist.Normal(0.0, 1.5))
  amp = numpyro.sample("amp", dist.Normal(amp_prior_center(logy_R), 2.0).expand([F]))
  logit_s = numpyro.sample("logit_s", dist.Normal(LOGIT_S0, 1.0).expand([F]))
  log_sigma = numpyro.sample("log_sigma", dist.Normal(jnp.log(0.02), 1.0))
  e, s = _bounded(logy_R, logit_E, logit_s)
  theta = jnp.concatenate([e[None], amp + s * center_F, s])
  numpyro.sample("obs", observation(likelihood, power_sum_log(theta, logx_RxF), jnp.exp(log_sigma)),
                 obs=logy_R)


def _power_sum_map(logx_RxF, logy_R, theta_P, *, max_iter: int, likelihood: str) -> dict:
  """MAP sites of `power_sum_model` by float64 L-BFGS from the point fit `theta_P` (E and the
  exponents clipped into their bounds, each term kept at its fitted value at the data's centre;
  a term the point fit sent to infinity, as a few rows allow, starts at its prior's centre)."""
  F = logx_RxF.shape[1]
  center_F = logx_RxF.mean(axis=0)
  E = np.clip(np.exp(theta_P[0] - logy_R.min()), 1e-4, 0.99)
  s_F = np.clip(theta_P[1 + F:], 0.01, 1.95)
  amp_F = theta_P[1:1 + F] - theta_P[1 + F:] * center_F
  resid = logy_R - np.asarray(power_sum_log(jnp.asarray(theta_P), jnp.asarray(logx_RxF)))
  spread = np.std(resid) if np.all(np.isfinite(resid)) else np.std(logy_R)
  start = {"logit_E": logit(E),
           "amp": np.where(np.isfinite(amp_F), amp_F, float(amp_prior_center(logy_R))),
           "logit_s": logit(s_F / 2), "log_sigma": np.log(max(spread, 1e-3))}
  return map_sites(power_sum_model, start, max_iter=max_iter, logx_RxF=logx_RxF, logy_R=logy_R,
                   center_F=center_F, likelihood=likelihood)


def _power_sum_theta(logx_RxF, logy_R, derive: Callable) -> Callable:
  """Sites of `power_sum_model` → the law's parameters (`derive(e, log C, s, σ)`)."""
  center_F = logx_RxF.mean(axis=0)

  def to_theta(samples):
    e, s = _bounded(logy_R, samples["logit_E"], samples["logit_s"])
    return derive(e, samples["amp"] + s * center_F, s, jnp.exp(samples["log_sigma"]))
  return to_theta


def map_power_sum(logx_RxF, y_R, theta_P, derive: Callable, *, max_iter: int = 1000,
                  likelihood: str = "normal", query_logx=None):
  """The MAP of `power_sum_model` (bounded E and exponents, weak priors) as the law's parameters
  (floats): a point estimate that cannot run off to the unbounded exponents a Huber fit on a few
  rows can reach (backtests refit on subsets). With `query_logx` (Q, F) it returns (params, sd_Q):
  also the Laplace sd (`laplace_sd`) of the log power sum at the queries."""
  check_likelihood("map_power_sum", "likelihood", likelihood)
  logx_RxF = np.asarray(logx_RxF, np.float64)
  logy_R = np.log(np.asarray(y_R, np.float64))
  sites = _power_sum_map(logx_RxF, logy_R, theta_P, max_iter=max_iter, likelihood=likelihood)
  with jax.enable_x64(True):
    params = _power_sum_theta(logx_RxF, logy_R, derive)(
        {k: jnp.asarray(v, jnp.float64) for k, v in sites.items()})
  params = {k: float(v) for k, v in params.items()}
  if query_logx is None:
    return params
  return params, laplace_sd(power_sum_model, sites, _power_sum_predict, {"query_logx": query_logx},
                            logx_RxF=logx_RxF, logy_R=logy_R, center_F=logx_RxF.mean(axis=0),
                            likelihood=likelihood)


def _power_sum_predict(z, model_kwargs, query_logx):
  """The log power sum at `query_logx` (Q, F) from `power_sum_model`'s sites (`laplace_sd`)."""
  e, s = _bounded(model_kwargs["logy_R"], z["logit_E"], z["logit_s"])
  return power_sum_log(jnp.concatenate([e[None], z["amp"] + s * model_kwargs["center_F"], s]),
                       query_logx)


def sample_power_sum(logx_RxF, y_R, theta_P, derive: Callable, *, num_chains: int,
                     num_warmup: int, num_samples: int, seed: int, meta: dict,
                     max_iter: int = 1000, likelihood: str = "normal"):
  """NUTS posterior of a power sum, warm-started at the MAP of `power_sum_model`
  (`_power_sum_map` from the point fit `theta_P`). `likelihood` ("normal" or "student_t", see
  `observation`) is recorded as meta["likelihood"]."""
  check_likelihood("sample_power_sum", "likelihood", likelihood)
  logx_RxF = np.asarray(logx_RxF, np.float64)
  logy_R = np.log(np.asarray(y_R, np.float64))
  center_F = logx_RxF.mean(axis=0)
  init = _power_sum_map(logx_RxF, logy_R, theta_P, max_iter=max_iter, likelihood=likelihood)
  # Diagonal mass: on the 8-rung CPU ladder it gave fewer divergences than dense in spot checks.
  return posterior_lib.sample_nuts(
      power_sum_model, init, _power_sum_theta(logx_RxF, logy_R, derive), num_chains=num_chains,
      num_warmup=num_warmup, num_samples=num_samples, seed=seed,
      meta=dict(meta, likelihood=likelihood), dense_mass=False, logx_RxF=logx_RxF,
      logy_R=logy_R, center_F=center_F, likelihood=likelihood)


def _split_kwargs(model_kwargs: dict) -> tuple:
  """(array kwargs, hashable tuple of the others: strings, flags, None) of a model's kwargs; the
  arrays are traced arguments of the jitted searches, so new data reuses a compilation."""
  static = tuple(sorted((k, v) for k, v in model_kwargs.items()
                        if isinstance(v, (str, bool, type(None)))))
  return {k: v for k, v in model_kwargs.items() if k not in dict(static)}, static


def _neg_log_density(model: Callable, static: tuple, arrays: dict, unravel: Callable):
  kwargs = dict(arrays, **dict(static))
  return lambda f: -infer_util.log_density(model, (), kwargs, unravel(f))[0]


@functools.lru_cache(maxsize=None)
def _map_search(model: Callable, max_iter: int, static: tuple):
  """Jitted L-BFGS on `model`'s negative log posterior, the data as arguments (compiled once per
  model, data shapes and static kwargs)."""
  def run(start, arrays):
    flat0, unravel = ravel_pytree(start)
    flat, value, _ = lbfgs(_neg_log_density(model, static, arrays, unravel), flat0,
                           max_iter=max_iter)
    return unravel(flat), value
  return jax.jit(run)


@functools.lru_cache(maxsize=None)
def _hessian(model: Callable, static: tuple):
  """Jitted Hessian of `model`'s negative log posterior in its flattened sites."""
  def run(sites, arrays):
    flat, unravel = ravel_pytree(sites)
    return jax.hessian(_neg_log_density(model, static, arrays, unravel))(flat)
  return jax.jit(run)


def _x64(tree):
  return jax.tree.map(lambda v: jnp.asarray(v, jnp.float64)
                      if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating) else jnp.asarray(v),
                      tree)


def map_sites(model: Callable, start: dict, *, max_iter: int, **model_kwargs) -> dict:
  """Maximum a posteriori sites of `model` (every latent site unconstrained): jitted float64
  L-BFGS on the negative log posterior from `start`; raises if it ends non-finite."""
  arrays, static = _split_kwargs(model_kwargs)
  with jax.enable_x64(True):
    sites, value = _map_search(model, max_iter, static)(_x64(start), _x64(arrays))
    if not np.isfinite(float(value)):
      raise ValueError("the MAP search ended at a non-finite log posterior; check the data")
    return {k: np.asarray(v) for k, v in sites.items()}


@functools.lru_cache(maxsize=None)
def _jacobian(predict: Callable, static: tuple):
  """Jitted Jacobian of `predict` in the flattened sites (see `laplace_sd`)."""
  def run(sites, arrays, query):
    flat, unravel = ravel_pytree(sites)
    return jax.jacfwd(lambda f: predict(unravel(f), dict(arrays, **dict(static)), **query))(flat)
  return jax.jit(run)


def laplace_sd(model: Callable, sites: dict, predict: Callable, query: dict,
               **model_kwargs) -> np.ndarray:
  """The Laplace approximation's sd of a prediction at the MAP `sites` of `model`:
  sqrt(diag(J·H⁻¹·Jᵀ)), H the Hessian of the negative log posterior in the sites, J the Jacobian
  of `predict(sites, model_kwargs, **query)` (a vector; the delta method). `predict` is a
  module-level function (each is compiled once per data and query shapes). H's eigenvalues are
  floored at 1e-10 of the largest (a direction data and priors leave flat counts as very
  uncertain, not as an error)."""
  arrays, static = _split_kwargs(model_kwargs)
  with jax.enable_x64(True):
    sites, arrays = _x64(sites), _x64(arrays)
    H_PxP = np.asarray(_hessian(model, static)(sites, arrays), np.float64)
    J_QxP = np.asarray(_jacobian(predict, static)(sites, arrays, _x64(query)), np.float64)
  w_P, V_PxP = np.linalg.eigh(0.5 * (H_PxP + H_PxP.T))
  w_P = np.maximum(w_P, 1e-10 * max(float(w_P.max()), 1e-300))
  return np.sqrt(np.sum((J_QxP @ V_PxP) ** 2 / w_P, axis=1))


# --------------------------------------------------------------------- inputs and queries

def check_positive_1d(name: str, **arrays) -> None:
  """Raises unless every array is 1-D, all of one length, finite and > 0 (`name`: the caller)."""
  shapes = {k: np.shape(v) for k, v in arrays.items()}
  if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
    raise ValueError(f"{name}: inputs must be 1-D arrays of one length, got shapes {shapes}")
  for k, v in arrays.items():
    v = np.asarray(v, np.float64)
    if not np.all(np.isfinite(v) & (v > 0)):
      raise ValueError(f"{name}: `{k}` must be finite and > 0; bad entries at "
                       f"{np.flatnonzero(~(np.isfinite(v) & (v > 0)))[:10].tolist()}")


def expand_params(params: dict, query_ndim: int) -> dict:
  """Appends `query_ndim` unit axes to every parameter so it broadcasts against a query."""
  return {k: jnp.reshape(jnp.asarray(v), jnp.shape(v) + (1,) * query_ndim)
          for k, v in params.items()}


def broadcast_query(*xs):
  """(the query arrays as jnp, the number of axes they broadcast to)."""
  xs = [jnp.asarray(x) for x in xs]
  return xs, len(jnp.broadcast_shapes(*(x.shape for x in xs)))
