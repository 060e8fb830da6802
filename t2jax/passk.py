"""pass@k: the unbiased estimator from samples, and pass@k under a Beta(a, b) accuracy law.

`unbiased_passk`, `observed_passk` and `unbiased_passk_var` are numpy (data side); `beta_passk` and
`beta_binomial_logpmf` are jnp and work under jit, vmap and grad (model side).
"""

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln
from scipy import special


def unbiased_passk(n, c, k) -> np.ndarray:
  """1 − C(n−c, k)/C(n, k): the chance that k of the n samples drawn include a correct one.

  `n`, `c`, `k` broadcast together (integers). Computed as 1 − ∏_{i<k} (1 − c/(n−i)) with the
  product in log space (log1p) and the result through expm1, so it is exact to rounding for small
  cases and stable for n in the tens of thousands.
  """
  n_, c_, k_ = (np.asarray(v) for v in (n, c, k))
  for name, v in (("n", n_), ("c", c_), ("k", k_)):
    if v.size and not np.all(np.equal(np.mod(v, 1), 0)):
      raise ValueError(f"unbiased_passk: {name} must hold integers, got {v.ravel()[:5]}; round or cast it")
  n_, c_, k_ = np.broadcast_arrays(n_.astype(np.int64), c_.astype(np.int64), k_.astype(np.int64))
  if np.any(k_ < 1):
    raise ValueError(f"unbiased_passk: k must be >= 1, got min k={k_.min()}; pass@0 is 0 by definition")
  if np.any(c_ < 0) or np.any(c_ > n_):
    raise ValueError("unbiased_passk: need 0 <= c <= n for every entry; "
                     f"found c={c_[(c_ < 0) | (c_ > n_)][:5]}; fix the counts")
  if np.any(k_ > n_):
    bad = np.flatnonzero((k_ > n_).ravel())[:5]
    raise ValueError(f"unbiased_passk: k > n at flat indices {bad.tolist()} (k={k_.ravel()[bad].tolist()}, "
                     f"n={n_.ravel()[bad].tolist()}); the estimator needs k <= n samples, use smaller k")
  certain = n_ - c_ < k_  # every k-subset holds a correct sample
  c_safe = np.where(certain, 0, c_).astype(np.float64)
  log_fail = np.zeros(n_.shape)
  for i in range(int(k_.max(initial=0))):
    log_fail += np.log1p(-np.where(i < k_, c_safe / np.maximum(n_ - i, 1), 0.0))
  return np.where(certain, 1.0, -np.expm1(log_fail))


def observed_passk(n_Q, c_Q, nll_Q, k: int) -> float:
  """Mean over questions of pass@k: unbiased from samples where n >= k, else 1 − (1 − e^−nll)^k."""
  sampled = n_Q >= k
  values = np.empty(len(n_Q))
  if sampled.any():
    values[sampled] = unbiased_passk(n_Q[sampled], c_Q[sampled], k)
  if (~sampled).any():
    if (n_Q[~sampled] > 0).any() or not np.isfinite(nll_Q[~sampled]).all():
      return float("nan")
    values[~sampled] = -np.expm1(k * np.log1p(-np.exp(-nll_Q[~sampled])))
  return float(values.mean())


def unbiased_passk_var(a, b, n: int, k_K) -> np.ndarray:
  """(..., K): the variance of one question's `unbiased_passk(n, c, k)` when its c of n samples
  are BetaBinomial(n, a, b), i.e. p ~ Beta(a, b), for a, b of any shape (...): the spread between
  questions (p) and within one question (its n samples) together; exact, summed over c = 0..n
  (k <= n)."""
  a, b = np.asarray(a, np.float64)[..., None], np.asarray(b, np.float64)[..., None]
  c_C = np.arange(n + 1.0)
  pmf_xC = np.exp(special.gammaln(n + 1.0) - special.gammaln(c_C + 1)
                  - special.gammaln(n - c_C + 1) + special.betaln(c_C + a, n - c_C + b)
                  - special.betaln(a, b))
  k_1xK = np.asarray(k_K, np.float64)[None, :]
  free_CxK = n - c_C[:, None] >= k_1xK  # C(n − c, k) > 0: some k-subset misses every correct one
  m_CxK = np.where(free_CxK, n - c_C[:, None], k_1xK)  # a valid argument where the term is 0
  log_fail_CxK = (special.gammaln(m_CxK + 1) - special.gammaln(m_CxK - k_1xK + 1)
                  - special.gammaln(n + 1.0) + special.gammaln(n - k_1xK + 1))
  est_CxK = np.where(free_CxK, -np.expm1(log_fail_CxK), 1.0)
  mean_xK = pmf_xC @ est_CxK
  return np.maximum(pmf_xC @ est_CxK ** 2 - mean_xK ** 2, 0.0)


def beta_passk_log_fail(a, b, k):
  """log(1 − pass@k) = log B(a, b+k) − log B(a, b) for p ~ Beta(a, b); k may be non-integer.

  Written as [lgamma(b+k) − lgamma(b)] − [lgamma(a+b+k) − lgamma(a+b)]: gammaln is accurate to
  a few ulps of its value, whereas jax's betaln is only good to ~1e-8 absolute, which would be
  a large relative error of a small pass@k. Use float64 (`jax.enable_x64`) where pass@k or
  1 − pass@k can be below ~1e-4.
  """
  a, b, k = jnp.asarray(a), jnp.asarray(b), jnp.asarray(k)
  ab = a + b
  # The difference is <= 0; clamp the rounding of huge b (float32) that would give pass@k < 0.
  return jnp.minimum((gammaln(b + k) - gammaln(b)) - (gammaln(ab + k) - gammaln(ab)), 0.0)


def beta_passk(a, b, k):
  """E[1 − (1 − p)^k] for p ~ Beta(a, b): 1 − B(a, b+k)/B(a, b), via gammaln and expm1."""
  return 0.0 - jnp.expm1(beta_passk_log_fail(a, b, k))  # 0.0 - x: no -0.0 where pass@k is 0


def beta_binomial_logpmf(c, n, a, b):
  """log P(c correct of n | p ~ Beta(a, b)) = log C(n, c) + log B(c+a, n−c+b) − log B(a, b),
  every term through gammaln."""
  c, n, a, b = (jnp.asarray(v) for v in (c, n, a, b))
  log_choose = gammaln(n + 1.0) - gammaln(c + 1.0) - gammaln(n - c + 1.0)
  log_beta_post = gammaln(c + a) + gammaln(n - c + b) - gammaln(n + a + b)
  log_beta_prior = gammaln(a) + gammaln(b) - gammaln(a + b)
  return log_choose + log_beta_post - log_beta_prior
