"""pass@k: the unbiased estimator against enumeration, the Beta forms against Monte Carlo."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from t2jax import passk


def _enumerated_passk(n, c, k):
  """Fraction of all k-subsets of n samples (the first c correct) holding a correct one."""
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_unbiased_passk_equals_enumeration_of_all_subsets():
  cases = [(n, c, k) for n in range(1, 8) for c in range(n + 1) for k in range(1, n + 1)]
  n, c, k = (np.array(v) for v in zip(*cases))
  got = passk.unbiased_passk(n, c, k)
  want = np.array([_enumerated_passk(*case) for case in cases])
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_unbiased_passk_broadcasts():
  out = passk.unbiased_passk(np.array([[10], [20]]), np.array([[0, 3, 10]]), 4)
  assert out.shape == (2, 3)
  assert out[0, 0] == 0.0 and out[0, 2] == 1.0


def test_unbiased_passk_stable_for_large_n():
  rng = np.random.default_rng(0)
  n = np.full(200, 10_000)
  c = rng.integers(0, 300, 200)
  k = rng.integers(1, 2_000, 200)
  got = passk.unbiased_passk(n, c, k)
  log_ratio = (special.gammaln(n - c + 1) - special.gammaln(n - c - k + 1)
               - special.gammaln(n + 1) + special.gammaln(n - k + 1))
  want = -np.expm1(log_ratio)
  assert np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1))
  np.testing.assert_allclose(got, want, rtol=1e-9)
  # One correct of n: a k-subset holds it with probability k/n exactly.
  np.testing.assert_allclose(passk.unbiased_passk(10_000, 1, 5_000), 0.5, rtol=1e-12)


def test_observed_passk_mixes_samples_and_gold_nll():
  n_Q, c_Q = np.array([8, 8, 0, 0]), np.array([2, 0, 0, 0])
  nll_Q = np.array([np.inf, np.inf, 0.5, 2.0])
  p_Q = np.exp(-nll_Q[2:])
  want = np.mean(np.concatenate([passk.unbiased_passk(n_Q[:2], c_Q[:2], 4), 1 - (1 - p_Q) ** 4]))
  np.testing.assert_allclose(passk.observed_passk(n_Q, c_Q, nll_Q, 4), want, rtol=1e-12)
  # Sampled questions with fewer samples than k have no estimate.
  assert np.isnan(passk.observed_passk(n_Q, c_Q, nll_Q, 16))


@pytest.mark.parametrize("n, c, k, field", [
    (5, 2, 6, "k > n"), (5, 6, 1, "0 <= c <= n"), (5, -1, 1, "0 <= c <= n"), (5, 2, 0, "k must"),
    (5.5, 2, 1, "n must hold integers")])
def test_unbiased_passk_rejects_bad_input(n, c, k, field):
  with pytest.raises(ValueError, match=field):
    passk.unbiased_passk(n, c, k)


@pytest.mark.parametrize("a, b, k", [(0.3, 2.0, 1), (0.3, 2.0, 16), (2.0, 0.5, 4), (5.0, 40.0, 64),
                                     (0.05, 0.2, 1000)])
def test_beta_passk_matches_monte_carlo(a, b, k):
  p_M = np.random.default_rng(1).beta(a, b, 400_000)
  with np.errstate(divide="ignore"):  # p rounds to 1 for some draws of Beta(0.05, 0.2)
    hit_M = -np.expm1(k * np.log1p(-p_M))
  sigma = hit_M.std() / np.sqrt(len(hit_M))
  with jax.enable_x64(True):
    got = float(passk.beta_passk(a, b, k))
  assert abs(got - hit_M.mean()) < 3 * sigma + 1e-12


def test_beta_passk_equals_exact_product_for_integer_k():
  """For integer k, 1 − pass@k = ∏_{j<k} (b + j)/(a + b + j); checked down to pass@k ~ 1e-5."""
  a_A = np.geomspace(1e-4, 50, 25)[:, None]
  b_B = np.geomspace(1e-2, 200, 20)[None, :]
  for k in (1, 3, 100, 5000):
    log_fail = sum(np.log1p(-a_A / (a_A + b_B + j)) for j in range(k))
    want = -np.expm1(log_fail)
    with jax.enable_x64(True):
      got = np.asarray(passk.beta_passk(a_A, b_B, k))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_beta_passk_jit_vmap_grad():
  f = jax.jit(jax.vmap(passk.beta_passk, in_axes=(0, 0, None)))
  out = f(jnp.array([0.5, 1.0, 3.0]), jnp.array([1.0, 2.0, 0.5]), 8.0)
  assert out.shape == (3,) and bool(jnp.all((out > 0) & (out < 1)))
  grads = jax.grad(lambda a, b: passk.beta_passk(a, b, 8.0), argnums=(0, 1))(1.0, 2.0)
  assert grads[0] > 0 > grads[1]  # more mass near 1 helps, near 0 hurts


def test_beta_binomial_logpmf_matches_scipy_and_normalises():
  n, a, b = 20, 0.7, 2.5
  c = np.arange(n + 1)
  with jax.enable_x64(True):
    got = np.asarray(passk.beta_binomial_logpmf(c, n, a, b))
  np.testing.assert_allclose(got, stats.betabinom.logpmf(c, n, a, b), rtol=1e-10)
  np.testing.assert_allclose(np.exp(got).sum(), 1.0, rtol=1e-12)


def test_unbiased_passk_var_equals_slow_sum_over_counts():
  """The variance of one question's unbiased pass@k, c ~ BetaBinomial(n, a, b), against a plain
  sum of `unbiased_passk` over c = 0..n with scipy's pmf; k = n is a Bernoulli of pass@n."""
  n, a, b = 12, 0.6, 1.7
  ks = np.array([1, 3, 7, 12])
  c = np.arange(n + 1)
  pmf = stats.betabinom.pmf(c, n, a, b)
  est = np.stack([passk.unbiased_passk(n, c, k) for k in ks], axis=1)
  want = pmf @ est ** 2 - (pmf @ est) ** 2
  got = passk.unbiased_passk_var(a, b, n, ks)
  np.testing.assert_allclose(got, want, rtol=1e-10)
  with jax.enable_x64(True):
    top = float(passk.beta_passk(a, b, float(n)))
  np.testing.assert_allclose(got[-1], top * (1 - top), rtol=1e-10)
  assert np.all(np.diff(got) > 0)  # fewer of the n samples reused: each k adds within-question spread
