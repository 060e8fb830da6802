"""Approach 1's target T(k) = E_i[−log pass@k_i] per model × task, estimated consistently.

A per-question posterior (e.g. Jeffreys) gives every never-solved question pass@n ≈ 0.29 whatever
the model, so its task mean measures the sampling budget n, not the model. Two consistent routes:

- samples: fit Beta(a, b) to the task's questions by maximum likelihood of the Beta-binomial
  (c_i correct of n_i; the algebra of `t2jax.passk.beta_binomial_logpmf`), then integrate
  T(k) = ∫ −log(1 − (1 − p)^k) Beta(p; a, b) dp. One Beta, not a mixture: its p^(a−1) density
  near 0 already carries the hard-question tail that dominates T, a point mass at p = 0 would
  make T infinite, and a two-Beta mixture is poorly identified from ~100 questions.
- nll: p_i = exp(−NLL_i) and T(k) = mean_i −log(1 − (1 − p_i)^k), exact (k = 1: the task loss).

Integration (`expected_neg_log_passk`). With g_k(p) = −log(1 − (1 − p)^k), split
g_k = φ_k + h_k, φ_k(p) = −(1 − p)^k log(kp). E[φ_k] is closed form,
B(a, b+k)/B(a, b) · [ψ(a+b+k) − ψ(a) − log k], and carries g's divergence at p = 0;
h_k → 0 like kp·log(1/kp) at p → 0 and like (1 − p)^k at p → 1. E[h_k] is the trapezoid rule in
z = logit p (the logit-Beta density is log-concave with exponential tails, the integrand is analytic
in |Im z| < π/2, so the rule converges geometrically) on a window of ±40 sd of z around its mean,
clipped where h_k is negligible. Against adaptive quadrature, for a ∈ [0.003, 1e4],
b ∈ [0.01, 1e4], k <= 1024 and T > 1e-12: relative error <= 1e-8 (<= 2e-7 at b = 0.01).

Degenerate model × task (no question with 0 < c_i < n_i) has no finite MLE; its `status` says
which, and its value is a censored floor, not an estimate (see `_censored_value`):
- "no_success": every c_i = 0 (the MLE runs to a → 0, T → ∞);
- "all_success": every c_i = n_i (b → 0, T → 0);
- "no_spread": every c_i ∈ {0, n_i}, both present, e.g. n = 1 everywhere (a + b → 0).
Approach 1 should fit only rows with status "ok" (or treat the others as censored). Among those,
`se_log_GxK` (the delta-method sd of log T from the fit's observed information; calibrated on
simulated tasks) tells a well-measured target (~0.05 for 500 questions) from one that a handful
of solved questions barely identifies (~1, or inf).
"""

import dataclasses

import numpy as np
from scipy import special

STATUSES = ("ok", "no_success", "all_success", "no_spread")
_WINDOW_SD = 40.0  # half-width of the quadrature window in sd of logit p
_NUM_NODES = 512
_LOG_THETA_BOUNDS = (np.log(1e-6), np.log(1e8))  # a and b; a + b = 1e8: sd of p below 1e-4
_CENSOR_LEVEL = 0.05
_MAX_NEWTON_ITER = 200


@dataclasses.dataclass(frozen=True)
class Targets:
  """Per-group estimates of T(k): groups are sorted unique labels (np.unique order)."""
  groups: np.ndarray  # (G,)
  mean_GxK: np.ndarray  # T(k_j) for group g
  se_log_GxK: np.ndarray  # samples: delta-method sd of log T from the Beta fit; NaN if not "ok"/nll
  status_G: np.ndarray  # str, one of STATUSES ("ok" for the nll route)
  a_G: np.ndarray  # fitted Beta; NaN where status is not "ok" or source is "nll"
  b_G: np.ndarray


def _log1mexp(x):
  """log(1 − e^x) for x <= 0, accurate on both sides of −log 2."""
  x = np.asarray(x, np.float64)
  with np.errstate(divide="ignore"):
    return np.where(x > -np.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _check_k(k_K) -> np.ndarray:
  k_K = np.asarray(k_K, np.float64)
  if k_K.ndim != 1 or not np.all(np.isfinite(k_K) & (k_K >= 1)):
    raise ValueError(f"k_K must be a 1-D array of k >= 1, got {k_K!r}; pass e.g. [1, 2, 4]")
  return k_K


def expected_neg_log_passk(a, b, k_K) -> np.ndarray:
  """T(k) = E[−log(1 − (1 − p)^k)] for p ~ Beta(a, b); a, b broadcast to shape S, out S + (K,)."""
  k_K = _check_k(k_K)
  a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
  if not np.all((a > 0) & (b > 0) & np.isfinite(a) & np.isfinite(b)):
    raise ValueError(f"expected_neg_log_passk: need finite a, b > 0, got a={a.ravel()[:5]}, "
                     f"b={b.ravel()[:5]}; drop groups whose Beta fit is degenerate (status)")
  a, b, k = a[..., None], b[..., None], k_K
  log_k = np.log(k)
  closed = (np.exp(special.betaln(a, b + k) - special.betaln(a, b))
            * (special.digamma(a + b + k) - special.digamma(a) - log_k))
  # One window in z = logit p for all k: mean ± 40 sd, clipped where every h_k is < e^-36 of
  # its scale. Shapes: S + (1, N) for the nodes, S + (K, N) for the integrand.
  mean_z = special.digamma(a) - special.digamma(b)
  sd_z = np.sqrt(special.polygamma(1, a) + special.polygamma(1, b))
  lo = np.maximum(mean_z - _WINDOW_SD * sd_z, -log_k.max() - 40.0)
  hi = np.minimum(mean_z + _WINDOW_SD * sd_z, np.maximum(mean_z, 0.0) + 40.0)
  hi = np.maximum(hi, lo)  # empty window: h_k is negligible wherever the mass is
  z = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, _NUM_NODES)
  step = (hi - lo) / (_NUM_NODES - 1)
  log_p, log_q = -np.logaddexp(0.0, -z), -np.logaddexp(0.0, z)
  w = np.exp(a[..., None] * log_p + b[..., None] * log_q - special.betaln(a, b)[..., None])
  k_, log_k_ = k[:, None], log_k[:, None]
  h = -_log1mexp(k_ * log_q) + np.exp(k_ * log_q) * (log_k_ + log_p)
  f = h * w
  quad = step * (f.sum(-1) - 0.5 * (f[..., 0] + f[..., -1]))
  return np.maximum(closed + quad, 0.0)  # T >= 0; only T below ~1e-300 can round past it


def _group_codes(group_Q, size: int):
  if group_Q is None:
    return np.zeros(1, np.int64), np.zeros(size, np.int64)
  group_Q = np.asarray(group_Q)
  if group_Q.shape != (size,):
    raise ValueError(f"group_Q must have shape ({size},) like n_Q, got {group_Q.shape}")
  return np.unique(group_Q, return_inverse=True)


def _check_counts(n_Q, c_Q):
  n_Q, c_Q = np.asarray(n_Q, np.float64), np.asarray(c_Q, np.float64)
  if n_Q.ndim != 1 or n_Q.shape != c_Q.shape:
    raise ValueError(f"n_Q and c_Q must be 1-D of one shape, got {n_Q.shape} and {c_Q.shape}")
  bad = ~((n_Q >= 0) & (c_Q >= 0) & (c_Q <= n_Q) & (np.mod(n_Q, 1) == 0) & (np.mod(c_Q, 1) == 0))
  if bad.any():
    i = np.flatnonzero(bad)[:5]
    raise ValueError(f"counts need integers 0 <= c <= n; questions {i.tolist()} have "
                     f"n={n_Q[i].tolist()}, c={c_Q[i].tolist()}; fix the counts")
  return n_Q, c_Q


def _status(groups, g_Q, n_Q, c_Q) -> np.ndarray:
  def any_(mask):
    return np.bincount(g_Q, mask, len(groups)) > 0
  sampled, solved, failed = any_(n_Q > 0), any_(c_Q > 0), any_(c_Q < n_Q)
  interior = any_((c_Q > 0) & (c_Q < n_Q))
  if not sampled.all():
    raise ValueError(f"groups {groups[~sampled][:5].tolist()} have no sampled question "
                     "(n = 0 everywhere); use source='nll' or sample them")
  return np.where(interior, "ok", np.where(~solved, "no_success",
                                           np.where(~failed, "all_success", "no_spread")))


def _trigamma(x):
  """ψ'(x) for x > 0 to ~1e-10 relative: six recurrence steps, then the asymptotic series
  (a Newton Hessian only; 10x faster than special.polygamma)."""
  acc = np.zeros_like(x)
  for j in range(6):
    acc += 1.0 / (x + j) ** 2
  y = 1.0 / (x + 6.0)
  y2 = y * y
  return acc + y + y2 * (0.5 + y * (1 / 6 + y2 * (-1 / 30 + y2 * (1 / 42 + y2 * (-1 / 30)))))


def _loglik(theta_Rx2, n_R, c_R, w_R, g_R, num_groups, derivatives: bool):
  """Σ_i log BB(c_i | n_i, a, b) per group, less log C(n, c); optionally the gradient and Hessian
  (aa, ab, bb) in (log a, log b)."""
  a, b = np.exp(theta_Rx2[:, 0]), np.exp(theta_Rx2[:, 1])
  gl = special.gammaln
  ll = w_R * (gl(c_R + a) - gl(a) + gl(n_R - c_R + b) - gl(b) - gl(n_R + a + b) + gl(a + b))
  ll_G = np.bincount(g_R, ll, num_groups)
  if not derivatives:
    return ll_G
  dg, tg = special.digamma, _trigamma
  d_ab, t_ab = dg(n_R + a + b) - dg(a + b), tg(n_R + a + b) - tg(a + b)
  g_a = w_R * (dg(c_R + a) - dg(a) - d_ab)
  g_b = w_R * (dg(n_R - c_R + b) - dg(b) - d_ab)
  h_aa = w_R * (tg(c_R + a) - tg(a) - t_ab)
  h_bb = w_R * (tg(n_R - c_R + b) - tg(b) - t_ab)
  h_ab = -w_R * t_ab
  s = lambda v: np.bincount(g_R, v, num_groups)
  # Chain rule to log a, log b.
  grad = np.stack([s(a * g_a), s(b * g_b)], -1)
  hess = np.stack([s(a * g_a + a * a * h_aa), s(a * b * h_ab), s(b * g_b + b * b * h_bb)], -1)
  return ll_G, grad, hess


def _moment_start(g_Q, n_Q, c_Q, num_groups) -> np.ndarray:
  """Method-of-moments (log a, log b) per group from c/n, the binomial variance removed."""
  use = n_Q > 0
  g, p, inv_n = g_Q[use], c_Q[use] / n_Q[use], 1.0 / n_Q[use]
  count = np.bincount(g, minlength=num_groups)
  m = np.bincount(g, p, num_groups) / count
  var = np.bincount(g, p * p, num_groups) / count - m * m
  m = np.clip(m, 1e-6, 1 - 1e-6)
  var_p = var - m * (1 - m) * np.bincount(g, inv_n, num_groups) / count
  nu = np.where(var_p > 0, m * (1 - m) / np.maximum(var_p, 1e-300) - 1, 1e3)
  nu = np.clip(nu, 0.05, 1e4)
  return np.stack([np.log(m * nu), np.log((1 - m) * nu)], -1)


def beta_binomial_mle(n_Q, c_Q, group_Q=None, *, max_iter: int = _MAX_NEWTON_ITER):
  """Maximum-likelihood Beta(a, b) of each group's questions from c_i correct of n_i samples.

  Returns (a_G, b_G, status_G), groups in np.unique order of `group_Q` (one group when None).
  a, b are NaN where status is not "ok" (no finite MLE; see the module docstring). Questions with
  n = 0 carry no likelihood. Damped Newton (Levenberg–Marquardt) in (log a, log b), vectorised
  over groups on the unique (group, n, c) rows; under-dispersed groups (MLE at a, b → ∞, a point
  mass) stop at a, b <= 1e8.
  """
  n_Q, c_Q = _check_counts(n_Q, c_Q)
  groups, g_Q = _group_codes(group_Q, n_Q.shape[0])
  return _mle(groups, g_Q, n_Q, c_Q, max_iter)[:3]


def _mle(groups, g_Q, n_Q, c_Q, max_iter: int):
  num_groups = len(groups)
  status = _status(groups, g_Q, n_Q, c_Q)
  use = n_Q > 0
  base = int(n_Q.max()) + 1  # unique (group, n, c) rows through one int64 key
  keys, w_R = np.unique((g_Q[use] * base + n_Q[use].astype(np.int64)) * base
                        + c_Q[use].astype(np.int64), return_counts=True)
  g_R, n_R, c_R = keys // (base * base), (keys // base % base).astype(np.float64), (
      keys % base).astype(np.float64)
  w_R = w_R.astype(np.float64)
  theta = _moment_start(g_Q, n_Q, c_Q, num_groups)
  damping = np.full(num_groups, 1e-3)
  active = status == "ok"
  lo, hi = _LOG_THETA_BOUNDS
  for _ in range(max_iter):
    if not active.any():
      break
    on = active[g_R]
    ll, grad, hess = _loglik(theta[g_R[on]], n_R[on], c_R[on], w_R[on], g_R[on], num_groups, True)
    # Newton on −ll with a shift that makes the 2×2 system positive definite.
    p, r, q = -hess[:, 0], -hess[:, 1], -hess[:, 2]
    eig_min = 0.5 * (p + q) - np.sqrt(0.25 * (p - q) ** 2 + r * r)
    shift = damping * (1.0 + np.abs(p) + np.abs(q)) + np.maximum(0.0, -eig_min)
    p, q = p + shift, q + shift
    det = p * q - r * r
    step = np.stack([q * grad[:, 0] - r * grad[:, 1], p * grad[:, 1] - r * grad[:, 0]], -1)
    step = np.where(active[:, None], step / np.where(det > 0, det, 1.0)[:, None], 0.0)
    trial = np.clip(theta + step, lo, hi)
    ll_trial = _loglik(trial[g_R[on]], n_R[on], c_R[on], w_R[on], g_R[on], num_groups, False)
    accept = active & (ll_trial >= ll)
    theta = np.where(accept[:, None], trial, theta)
    damping = np.where(accept, np.maximum(damping / 3, 1e-12), damping * 4)
    # Converged once the model's predicted gain is below the rounding of the log-likelihood.
    gain = 0.5 * (grad * step).sum(-1)
    done = (gain < 1e-13 * (1.0 + np.abs(ll))) | (damping > 1e12)
    pinned = accept & (trial == hi).all(-1)
    active &= ~(done | pinned)
  ok = status == "ok"
  a_G = np.where(ok, np.exp(theta[:, 0]), np.nan)
  b_G = np.where(ok, np.exp(theta[:, 1]), np.nan)
  info_Gx3 = np.full((num_groups, 3), np.nan)  # observed information in (log a, log b)
  if ok.any():
    on = ok[g_R]
    info_Gx3[ok] = -_loglik(theta[g_R[on]], n_R[on], c_R[on], w_R[on], g_R[on], num_groups,
                            True)[2][ok]
  return a_G, b_G, status, info_Gx3


def _censored_value(g_Q, n_Q, c_Q, num_groups, k_K) -> np.ndarray:
  """The value reported for degenerate groups: each never-solved question at the highest rate
  the pooled class allows at 95% (p = 1 − 0.05^(1/S0), S0 its samples), each always-solved one at
  the highest such failure rate. By Jensen (−log pass@k is convex in p) the never-solved part is a
  95% lower confidence bound on its mean when n is the same for all; it still grows with the
  budget S, so it is a censored floor, not an estimate."""
  use = n_Q > 0
  g, n, c = g_Q[use], n_Q[use], c_Q[use]
  count = np.bincount(g, minlength=num_groups)
  zero, full = c == 0, c == n
  frac0 = np.bincount(g, zero, num_groups) / count
  frac1 = np.bincount(g, full & ~zero, num_groups) / count
  s0, s1 = np.bincount(g, n * zero, num_groups), np.bincount(g, n * (full & ~zero), num_groups)
  with np.errstate(divide="ignore"):
    log_q0 = np.log(_CENSOR_LEVEL) / np.maximum(s0, 1)  # log(1 − p0), p0 the never-solved rate
    log_f1 = np.log(_CENSOR_LEVEL) / np.maximum(s1, 1)  # log(1 − q1), q1 the failure rate
    log_q1 = np.log(-np.expm1(log_f1))
  k = k_K[None, :]
  t0 = -_log1mexp(k * log_q0[:, None])
  t1 = -_log1mexp(k * log_q1[:, None])
  return frac0[:, None] * t0 + frac1[:, None] * t1


def neg_log_passk_from_samples(n_Q, c_Q, k_K, group_Q=None) -> Targets:
  """T(k) per group from samples: the Beta-binomial MLE over its questions, integrated."""
  k_K = _check_k(k_K)
  n_Q, c_Q = _check_counts(n_Q, c_Q)
  groups, g_Q = _group_codes(group_Q, n_Q.shape[0])
  a_G, b_G, status_G, info_Gx3 = _mle(groups, g_Q, n_Q, c_Q, _MAX_NEWTON_ITER)
  ok = status_G == "ok"
  mean_GxK = _censored_value(g_Q, n_Q, c_Q, len(groups), k_K)
  se_log_GxK = np.full(mean_GxK.shape, np.nan)
  if ok.any():
    mean_GxK[ok] = expected_neg_log_passk(a_G[ok], b_G[ok], k_K)
    se_log_GxK[ok] = _se_log(a_G[ok], b_G[ok], info_Gx3[ok], k_K)
  return Targets(groups, mean_GxK, se_log_GxK, status_G, a_G, b_G)


def _se_log(a_G, b_G, info_Gx3, k_K, eps: float = 1e-4) -> np.ndarray:
  """Delta-method sd of log T(k): central differences in (log a, log b), the inverse observed
  information as their covariance; inf where the information is singular."""
  up, down = np.exp(eps), np.exp(-eps)
  log_t = np.log(expected_neg_log_passk(a_G * np.array([[up], [down], [1], [1]]),
                                        b_G * np.array([[1], [1], [up], [down]]), k_K))
  d_a, d_b = (log_t[0] - log_t[1]) / (2 * eps), (log_t[2] - log_t[3]) / (2 * eps)
  p, r, q = (v[:, None] for v in info_Gx3.T)
  det = p * q - r * r
  var = (q * d_a ** 2 - 2 * r * d_a * d_b + p * d_b ** 2) / np.where(det > 0, det, np.nan)
  return np.where(det > 0, np.sqrt(np.maximum(var, 0.0)), np.inf)


def neg_log_passk_from_nll(nll_Q, k_K, group_Q=None) -> Targets:
  """T(k) per group from gold NLLs: mean over its questions of −log(1 − (1 − e^−nll)^k), exact.

  Written as nll − [log(1 − q^k) − log(1 − q)] with q = 1 − e^−nll, so k = 1 returns the mean
  NLL to rounding of the mean alone.
  """
  k_K = _check_k(k_K)
  nll_Q = np.asarray(nll_Q, np.float64)
  if nll_Q.ndim != 1 or not np.all(np.isfinite(nll_Q) & (nll_Q >= 0)):
    bad = np.flatnonzero(~(np.isfinite(nll_Q) & (nll_Q >= 0)))[:5]
    raise ValueError(f"nll_Q must be a 1-D array of finite NLLs >= 0; questions {bad.tolist()} "
                     f"have {nll_Q.ravel()[bad].tolist()}; use source='samples' or drop them")
  groups, g_Q = _group_codes(group_Q, nll_Q.shape[0])
  log_q = _log1mexp(-nll_Q)[:, None]  # −inf at nll = 0, where excess is 0 − 0
  excess = _log1mexp(k_K[None, :] * log_q) - _log1mexp(log_q)
  per_QxK = nll_Q[:, None] - excess
  count = np.bincount(g_Q, minlength=len(groups))
  mean_GxK = np.stack([np.bincount(g_Q, per_QxK[:, j], len(groups)) for j in range(len(k_K))],
                      -1) / count[:, None]
  nan = np.full(len(groups), np.nan)
  return Targets(groups, mean_GxK, np.full(mean_GxK.shape, np.nan), np.full(len(groups), "ok"),
                 nan, nan)


def task_targets(model_Q, n_Q, c_Q, nll_Q, k_K, source: str = "samples") -> Targets:
  """One task's T(k) per model (groups = np.unique(model_Q)), from "samples" or "nll"."""
  if source == "samples":
    return neg_log_passk_from_samples(n_Q, c_Q, k_K, model_Q)
  if source == "nll":
    return neg_log_passk_from_nll(nll_Q, k_K, model_Q)
  raise ValueError(f"source must be 'samples' or 'nll', got {source!r}")
