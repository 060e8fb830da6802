"""T2 planner: compute budgets -> optimal model size N, training tokens D and samples per query k.

A law enters as `passk_fn(params, N, D, k) -> predicted accuracy` (jnp, broadcasting over N, D, k);
the planner maximises it. For Approach 1 pass `exp(-L_hat)`, which has the same argmax as L_hat's
argmin. Params are pytrees of arrays; the `*_frontier` and `isoflop_curves` functions take posterior
draws (every leaf with a leading draw axis S) and push every draw through the optimiser with vmap.

Budgets (FLOPs), as in the paper and DESIGN.md section 3:
- inference budget: training C = 6·N·D and per-token inference budget C_inf = 2·N·k, so
  D = C/(6N), k = floor(C_inf/(2N)) >= 1, searched over N alone;
- training only: D = C/(6N) with k fixed (k = 1 is the Chinchilla setting);
- lifecycle (ours): C = 6·N·D + Q·2N·(T_prompt + k·T_gen), the prompt encoded once and shared by
  the k samples, searched over (N, k) with D = (C − Q·2N·(T_prompt + k·T_gen))/(6N) > 0.

N is searched on a dense log grid, then refined by golden-section search in log N with k held at the
grid optimum's k (inside the N range where that k is the affordable one). The grid's N range is the
tokens-per-parameter range at C intersected with absolute bounds [n_min, n_max] (the planning stage
sets them around the fitted model sizes). Everything runs in float64.
"""

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
PasskFn = Callable[[Params, jax.Array, jax.Array, jax.Array], jax.Array]

PLAN_KEYS = ("N", "D", "k", "tokens_per_param", "accuracy", "feasible", "at_grid_edge", "at_n_bound")
_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclasses.dataclass(frozen=True)
class SearchGrid:
  """Search space. At budget C, N spans the tokens-per-parameter range D/N = C/(6·N²) given here,
  clipped to [n_min, n_max] (the N bounds win where the two ranges do not overlap).

  `num_n` log-spaced N values (the lifecycle search uses `num_n_per_k` per k), then `refine_iters`
  golden-section steps; lifecycle k takes every integer up to `k_dense`, then `num_k` log-spaced
  integers up to `k_max`. An optimum on an N bound is flagged `at_n_bound` (the law would go beyond
  the sizes it was fitted on); one on another edge of this space `at_grid_edge` (widen the grid).
  """
  min_tokens_per_param: float = 0.1
  max_tokens_per_param: float = 1e7
  n_min: float = 0.0
  n_max: float = math.inf
  num_n: int = 400
  num_n_per_k: int = 32
  refine_iters: int = 40
  k_dense: int = 16
  k_max: int = 4096
  num_k: int = 40

  def __post_init__(self):
    if not 0 < self.min_tokens_per_param < self.max_tokens_per_param:
      raise ValueError(
          f"SearchGrid: need 0 < min_tokens_per_param < max_tokens_per_param, got "
          f"{self.min_tokens_per_param} and {self.max_tokens_per_param}; fix the plan grid settings")
    if not 0 <= self.n_min < self.n_max:
      raise ValueError(f"SearchGrid: need 0 <= n_min < n_max, got {self.n_min} and {self.n_max}; "
                       "fix the N bounds (plan: n_range_factor)")
    for name in ("num_n", "num_n_per_k", "refine_iters", "k_dense", "k_max", "num_k"):
      if getattr(self, name) < 2:
        raise ValueError(f"SearchGrid.{name}={getattr(self, name)} is too small; use at least 2")
    if self.k_dense > self.k_max:
      raise ValueError(f"SearchGrid: k_dense={self.k_dense} exceeds k_max={self.k_max}; lower k_dense")

  def ks(self) -> np.ndarray:
    """Integer k values searched by the lifecycle planner."""
    dense = np.arange(1, self.k_dense + 1)
    sparse = np.round(np.geomspace(self.k_dense, self.k_max, self.num_k))
    return np.unique(np.concatenate([dense, sparse])).astype(np.float64)


def _log_n_range(C, grid: SearchGrid):
  """(lo, hi, lo_is_n, hi_is_n): log N bounds at budget C, the tokens-per-parameter range clipped to
  the N bounds; `*_is_n` says that side is an N bound."""
  log_c6 = jnp.log(C / 6.0)
  lo_t = 0.5 * (log_c6 - math.log(grid.max_tokens_per_param))
  hi_t = 0.5 * (log_c6 - math.log(grid.min_tokens_per_param))
  log_min = math.log(grid.n_min) if grid.n_min > 0 else -math.inf
  lo, hi = (jnp.clip(x, log_min, math.log(grid.n_max)) for x in (lo_t, hi_t))
  return lo, hi, lo != lo_t, hi != hi_t


def _edges(at_lo, at_hi, lo_is_n, hi_is_n):
  """(at_grid_edge, at_n_bound) of an optimum at the low or high end of the N range."""
  return (at_lo & ~lo_is_n) | (at_hi & ~hi_is_n), (at_lo & lo_is_n) | (at_hi & hi_is_n)


def _safe(acc):
  return jnp.where(jnp.isnan(acc), -jnp.inf, acc)


def _golden_max(f, lo, hi, iters):
  """Maximises a unimodal scalar f on [lo, hi] with one evaluation per step; returns (x, f(x))."""
  c, d = hi - _INV_PHI * (hi - lo), lo + _INV_PHI * (hi - lo)
  fc, fd = jax.vmap(f)(jnp.stack([c, d]))

  def body(_, state):
    a, b, c, d, fc, fd = state
    left = fc >= fd  # the maximum lies in [a, d]: d <- c, evaluate a new c; else mirror
    a, b = jnp.where(left, a, c), jnp.where(left, d, b)
    x = jnp.where(left, b - _INV_PHI * (b - a), a + _INV_PHI * (b - a))
    fx = f(x)
    c, fc, d, fd = (jnp.where(left, x, d), jnp.where(left, fx, fd), jnp.where(left, c, x),
                    jnp.where(left, fc, fx))
    return a, b, c, d, fc, fd

  _, _, c, d, fc, fd = jax.lax.fori_loop(0, iters, body, (lo, hi, c, d, fc, fd))
  return jnp.where(fc >= fd, c, d), jnp.maximum(fc, fd)


def _result(N, C_train, k, acc, feasible, edge, n_bound):
  D = C_train / (6.0 * N)
  nan = jnp.nan
  return {
      "N": jnp.where(feasible, N, nan),
      "D": jnp.where(feasible, D, nan),
      "k": jnp.where(feasible, k, nan),
      "tokens_per_param": jnp.where(feasible, D / N, nan),
      "accuracy": jnp.where(feasible, acc, nan),
      "feasible": feasible,
      "at_grid_edge": feasible & edge,
      "at_n_bound": feasible & n_bound,
  }


def _accuracy(passk_fn, params, train_fn, logn, k):
  """Predicted accuracy at log N and k, with D from the training FLOPs train_fn(logN, k) leaves."""
  n = jnp.exp(logn)
  return _safe(passk_fn(params, n, train_fn(logn, k) / (6.0 * n), k))


def _grid_then_refine(acc_fn, logn_M, k_M, ok_M, seg_lo_M, seg_hi_M, iters):
  """Argmax of acc_fn(logN, k) over an increasing log N grid, then golden refinement of log N.

  k is held at the winner's; refinement stays between the winner's neighbours and inside
  [seg_lo, seg_hi], where that k remains affordable. Returns (log N, k, acc, feasible, at_lo, at_hi),
  the last two meaning the winner is the grid's first or last point.
  """
  acc_M = jnp.where(ok_M, acc_fn(logn_M, k_M), -jnp.inf)
  i = jnp.argmax(acc_M)
  last = logn_M.shape[0] - 1
  k, acc_grid = k_M[i], acc_M[i]
  lo = jnp.maximum(logn_M[jnp.maximum(i - 1, 0)], seg_lo_M[i])
  hi = jnp.minimum(logn_M[jnp.minimum(i + 1, last)], seg_hi_M[i])
  x, fx = _golden_max(lambda logn: acc_fn(logn, k), lo, hi, iters)
  better = fx > acc_grid
  collapsed = logn_M[last] - logn_M[0] < 1e-9  # a single-point range is at both of its ends
  return (jnp.where(better, x, logn_M[i]), k, jnp.where(better, fx, acc_grid),
          jnp.isfinite(acc_grid), (i == 0) | collapsed, (i == last) | collapsed)


def plan_inference_budget(passk_fn: PasskFn, params: Params, C, C_inf, grid: SearchGrid = SearchGrid()):
  """The paper's setting for one draw: D = C/(6N), k = floor(C_inf/(2N)) >= 1; returns PLAN_KEYS.

  N above C_inf/2 (k < 1) is infeasible; that bound is a constraint, not a grid edge. The low end
  counts as reached when the grid's first point wins or when the best N just below the range (the
  top of the next k's segment) would beat the optimum.
  """
  lo, hi, lo_is_n, hi_is_n = _log_n_range(C, grid)
  logn_M = jnp.linspace(lo, hi, grid.num_n)
  k_M = jnp.floor(C_inf / (2.0 * jnp.exp(logn_M)) * (1.0 + 1e-12))
  seg_lo_M = jnp.log(C_inf / (2.0 * (k_M + 1.0)))
  seg_hi_M = jnp.log(C_inf / (2.0 * jnp.maximum(k_M, 1.0)))
  acc_fn = lambda logn, k: _accuracy(passk_fn, params, lambda *_: C, logn, k)
  logn, k, acc, feasible, at_lo, at_hi = _grid_then_refine(acc_fn, logn_M, k_M, k_M >= 1, seg_lo_M,
                                                            seg_hi_M, grid.refine_iters)
  k_below = k_M[0] + 1.0  # below the range, N = C_inf/(2k) is the best size of each k
  at_lo = at_lo | (acc_fn(jnp.log(C_inf / (2.0 * k_below)), k_below) > acc)
  return _result(jnp.exp(logn), C, k, acc, feasible, *_edges(at_lo, at_hi, lo_is_n, hi_is_n))


def plan_training_only(passk_fn: PasskFn, params: Params, C, k=1.0, grid: SearchGrid = SearchGrid()):
  """Zero inference cost, k fixed: D = C/(6N); with k = 1 this is the Chinchilla optimum."""
  lo, hi, lo_is_n, hi_is_n = _log_n_range(C, grid)
  logn_M = jnp.linspace(lo, hi, grid.num_n)
  ones = jnp.ones_like(logn_M)
  acc_fn = lambda logn, k: _accuracy(passk_fn, params, lambda *_: C, logn, k)
  logn, k, acc, feasible, at_lo, at_hi = _grid_then_refine(acc_fn, logn_M, k * ones, ones > 0,
                                                            lo * ones, hi * ones, grid.refine_iters)
  return _result(jnp.exp(logn), C, k, acc, feasible, *_edges(at_lo, at_hi, lo_is_n, hi_is_n))


def plan_lifecycle(passk_fn: PasskFn, params: Params, C, queries, prompt_tokens, gen_tokens,
                   grid: SearchGrid = SearchGrid(), k_fixed=None):
  """Lifecycle budget C = 6ND + Q·2N·(T_prompt + k·T_gen) for one draw, over (N, k); returns PLAN_KEYS.

  For each k on the grid, N runs from the grid's smallest N up to just below N_max(k), where D
  reaches 0, and is refined; then bisection on the profile max_N accuracy(N, k) finds the best integer
  k between the grid neighbours of the best grid k. An optimum at k_max or at either end of the N range
  is flagged as a grid edge (an N bound: `at_n_bound`). `k_fixed` pins k (k = 1: no repeated
  sampling).
  """
  ks_K = jnp.asarray(grid.ks() if k_fixed is None else [float(k_fixed)])
  lo, hi, lo_is_n, hi_is_n = _log_n_range(C, grid)
  train_fn = lambda logn, k: C - queries * 2.0 * jnp.exp(logn) * (prompt_tokens + k * gen_tokens)
  acc_fn = lambda logn, k: _accuracy(passk_fn, params, train_fn, logn, k)

  def best_n(k):
    hi_k = jnp.minimum(hi, jnp.log(C / jnp.maximum(queries * 2.0 * (prompt_tokens + k * gen_tokens),
                                                   1e-300)) - 1e-6)
    logn_M = jnp.linspace(lo, hi_k, grid.num_n_per_k)
    ones = jnp.ones_like(logn_M)
    logn, k, acc, feasible, at_lo, at_hi = _grid_then_refine(
        acc_fn, logn_M, k * ones, ones * (hi_k > lo) > 0, lo * ones, hi_k * ones, grid.refine_iters)
    return (logn, k, acc, feasible) + _edges(at_lo, at_hi, lo_is_n, hi_is_n & (hi_k == hi))

  logn_K, _, acc_K, feasible_K, edge_K, bound_K = jax.vmap(best_n)(ks_K)
  j = jnp.argmax(jnp.where(feasible_K, acc_K, -jnp.inf))
  best = (acc_K[j], logn_K[j], ks_K[j], edge_K[j], bound_K[j])
  if k_fixed is None:  # the best integer k between the grid neighbours of the grid's best k

    def bisect(_, state):  # finds the first k in [a, b] whose successor is no better
      a, b, best = state
      mid = jnp.floor(0.5 * (a + b))
      k_2 = jnp.stack([mid + 1.0, mid])
      logn_2, _, acc_2, _, edge_2, bound_2 = jax.vmap(best_n)(k_2)
      up = acc_2[0] > acc_2[1]
      i = jnp.argmax(acc_2)
      new = (acc_2[i], logn_2[i], k_2[i], edge_2[i], bound_2[i])
      best = jax.tree_util.tree_map(lambda n, o: jnp.where(new[0] > best[0], n, o), new, best)
      return jnp.where((a < b) & up, mid + 1.0, a), jnp.where((a < b) & ~up, mid, b), best

    # one more step than bisection needs, so the final k itself is evaluated
    last = ks_K.shape[0] - 1
    _, _, best = jax.lax.fori_loop(
        0, int(math.ceil(math.log2(grid.k_max))) + 2, bisect,
        (ks_K[jnp.maximum(j - 1, 0)], ks_K[jnp.minimum(j + 1, last)], best))
  acc, logn, k, edge, n_bound = best
  if k_fixed is None:
    edge = edge | (k == ks_K[-1])
  return _result(jnp.exp(logn), train_fn(logn, k), k, acc, feasible_K[j], edge, n_bound)


def _draws_size(draws) -> int:
  sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(draws)}
  if len(sizes) != 1 or None in sizes:
    raise ValueError(
        f"posterior draws must give every parameter the same leading draw axis S; got leading sizes "
        f"{sorted(map(str, sizes))}; add a draw axis (as_draws) or pass matching draws")
  return sizes.pop()


def as_draws(params: Params) -> Params:
  """A point estimate as a posterior with one draw (leading axis of size 1)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x)[None], params)


def _sweep(fn, draws, a_I, b_B):
  """fn(params, a, b) -> dict of scalars, vmapped to [S, I, B] over draws, a_I, b_B."""
  over_b = jax.vmap(fn, in_axes=(None, None, 0))
  over_ab = jax.vmap(over_b, in_axes=(None, 0, None))
  return jax.vmap(over_ab, in_axes=(0, None, None))(draws, a_I, b_B)


def _to_numpy(out):
  return {key: np.asarray(value) for key, value in out.items()}


def _f64(x):
  return jnp.asarray(np.asarray(x, dtype=np.float64))


@functools.partial(jax.jit, static_argnames=("passk_fn", "grid"))
def _frontier(passk_fn, grid, draws, C_inf_I, C_B):
  return _sweep(lambda p, c_inf, c: plan_inference_budget(passk_fn, p, c, c_inf, grid), draws, C_inf_I,
                C_B)


@functools.partial(jax.jit, static_argnames=("passk_fn", "grid"))
def _training_only(passk_fn, grid, draws, k_1, C_B):
  return _sweep(lambda p, k, c: plan_training_only(passk_fn, p, c, k, grid), draws, k_1, C_B)


@functools.partial(jax.jit, static_argnames=("passk_fn", "grid", "k_fixed"))
def _lifecycle(passk_fn, grid, k_fixed, draws, Q_I, C_B, prompt_tokens, gen_tokens):
  fn = lambda p, q, c: plan_lifecycle(passk_fn, p, c, q, prompt_tokens, gen_tokens, grid, k_fixed)
  return _sweep(fn, draws, Q_I, C_B)


def frontier(passk_fn: PasskFn, draws: Params, budgets, inference_budgets,
             grid: SearchGrid = SearchGrid()) -> dict:
  """The paper's setting for every draw, budget C_B and per-token inference budget C_inf_I.

  Returns numpy arrays [S, I, B] keyed by PLAN_KEYS. Compilations are cached per (passk_fn, grid);
  pass the same function object to reuse them.
  """
  _draws_size(draws)
  with jax.enable_x64(True):
    return _to_numpy(_frontier(passk_fn, grid, draws, _f64(inference_budgets), _f64(budgets)))


def training_only_frontier(passk_fn: PasskFn, draws: Params, budgets, k=1.0,
                           grid: SearchGrid = SearchGrid()) -> dict:
  """Zero inference cost with k fixed, for every draw and budget: numpy arrays [S, B]."""
  _draws_size(draws)
  with jax.enable_x64(True):
    out = _to_numpy(_training_only(passk_fn, grid, draws, _f64([k]), _f64(budgets)))
    return {key: value[:, 0] for key, value in out.items()}


def lifecycle_frontier(passk_fn: PasskFn, draws: Params, budgets, queries, prompt_tokens: float,
                       gen_tokens: float, grid: SearchGrid = SearchGrid(), k_fixed=None) -> dict:
  """Lifecycle budgets for every draw, query count Q_I and budget C_B: numpy arrays [S, I, B]."""
  _draws_size(draws)
  if prompt_tokens < 0 or gen_tokens <= 0:
    raise ValueError(f"lifecycle needs prompt_tokens >= 0 and gen_tokens > 0, got {prompt_tokens}, "
                     f"{gen_tokens}; fix plan.prompt_tokens / plan.gen_tokens")
  with jax.enable_x64(True):
    return _to_numpy(_lifecycle(passk_fn, grid, k_fixed, draws, _f64(queries), _f64(budgets),
                                _f64(prompt_tokens), _f64(gen_tokens)))


@functools.partial(jax.jit, static_argnames=("passk_fn",))
def _baseline(passk_fn, draws, N_SxB, C_B, C_inf_I):

  def one(p, n_B, c_inf):
    k_B = jnp.floor(c_inf / (2.0 * n_B) * (1.0 + 1e-12))
    acc_B = passk_fn(p, n_B, C_B / (6.0 * n_B), jnp.maximum(k_B, 1.0))
    acc_B = jnp.where(k_B >= 1, acc_B, 0.0)
    no = jnp.zeros_like(n_B, bool)
    return _result(n_B, C_B, k_B, acc_B, jnp.isfinite(n_B), no, no)

  return jax.vmap(jax.vmap(one, in_axes=(None, None, 0)), in_axes=(0, 0, None))(draws, N_SxB, C_inf_I)


def baseline_at(passk_fn: PasskFn, draws: Params, N_SxB, budgets, inference_budgets) -> dict:
  """A given model size per draw and budget (e.g. the Chinchilla optimum), trained on D = C/(6N) and
  sampled k = floor(C_inf/(2N)) times: numpy arrays [S, I, B] keyed by PLAN_KEYS.

  A model too large to afford one sample (k = 0) answers nothing: its accuracy is 0.
  """
  _draws_size(draws)
  with jax.enable_x64(True):
    return _to_numpy(_baseline(passk_fn, draws, _f64(N_SxB), _f64(budgets), _f64(inference_budgets)))


@functools.partial(jax.jit, static_argnames=("passk_fn", "ks_L"))
def _isoflop(passk_fn, draws, C, N_M, ks_K, C_inf_I, lifecycle_3, ks_L):

  def one(p):
    n_1xM, d_1xM = N_M[None], C / (6.0 * N_M[None])
    out = {"by_k": passk_fn(p, n_1xM, d_1xM, ks_K[:, None])}
    k_IxM = jnp.floor(C_inf_I[:, None] / (2.0 * n_1xM) * (1.0 + 1e-12))
    acc_IxM = passk_fn(p, n_1xM, d_1xM, jnp.maximum(k_IxM, 1.0))
    out["by_inference"] = jnp.where(k_IxM >= 1, acc_IxM, jnp.nan)
    if ks_L:
      queries, prompt_tokens, gen_tokens = lifecycle_3
      k_Lx1 = jnp.asarray(ks_L)[:, None]
      train_LxM = C - queries * 2.0 * n_1xM * (prompt_tokens + k_Lx1 * gen_tokens)
      acc_LxM = passk_fn(p, n_1xM, jnp.maximum(train_LxM, 1.0) / (6.0 * n_1xM), k_Lx1)
      acc_LxM = jnp.where(train_LxM > 0, _safe(acc_LxM), -jnp.inf)
      best_M = jnp.max(acc_LxM, axis=0)
      out["best_k"] = jnp.where(jnp.isfinite(best_M), best_M, jnp.nan)
      out["best_k_value"] = jnp.where(jnp.isfinite(best_M), k_Lx1[jnp.argmax(acc_LxM, axis=0), 0],
                                      jnp.nan)
    return out

  return jax.vmap(one)(draws)


def isoflop_curves(passk_fn: PasskFn, draws: Params, C: float, N_M, ks=(), inference_budgets=(),
                   lifecycle=None, grid: SearchGrid = SearchGrid()) -> dict:
  """Predicted accuracy vs N at training budget C (D = C/(6N)), per draw.

  Returns numpy arrays: `N` [M]; `by_k` [S, K, M] for fixed k (no inference cost; k = 1 is the
  Chinchilla isoFLOP); `by_inference` [S, I, M] with k = floor(C_inf/(2N)) (NaN where k < 1);
  `best_k` and `best_k_value` [S, M] under `lifecycle=(queries, prompt_tokens, gen_tokens)`, where C is
  the lifecycle total and each N takes its best k on the grid's k values (NaN where none is
  affordable).
  """
  _draws_size(draws)
  with jax.enable_x64(True):
    ks_L = tuple(grid.ks().tolist()) if lifecycle is not None else ()
    out = _to_numpy(_isoflop(passk_fn, draws, _f64(C), _f64(N_M), _f64(ks), _f64(inference_budgets),
                             _f64(lifecycle if lifecycle is not None else (0.0, 0.0, 0.0)), ks_L))
    out["N"] = np.asarray(N_M, dtype=np.float64)
    return out


def summarize(x_S, axis: int = 0, method: str = "linear") -> dict:
  """Posterior median and 90% interval (5%, 95% quantiles) along `axis`, ignoring infeasible (NaN) draws;
  `feasible_fraction` is the share of draws with a value. `method` is numpy's quantile method
  ("inverted_cdf" keeps integer quantities such as k integer)."""
  x = np.asarray(x_S, dtype=np.float64)
  finite = np.isfinite(x)
  frac = finite.mean(axis=axis)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: reported via feasible_fraction
    q = np.nanquantile(np.where(finite, x, np.nan), [0.5, 0.05, 0.95], axis=axis, method=method)
  return {"median": q[0], "lo": q[1], "hi": q[2], "feasible_fraction": frac}


def interval(x_S, axis: int = 0, method: str = "linear") -> dict:
  """The median, lo and hi of `summarize`."""
  s = summarize(x_S, axis=axis, method=method)
  return {"median": s["median"], "lo": s["lo"], "hi": s["hi"]}
