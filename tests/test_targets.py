"""Approach 1 targets: the Beta integral against quadrature and Monte Carlo, the Beta-binomial
MLE, consistency on simulated questions (n = 64 vs 1024), the old Jeffreys bias, edge cases."""

import numpy as np
import pytest
from scipy import integrate, special

from t2jax.laws import targets

LAWS = ((0.3, 3.0), (0.05, 2.0))
K = np.array([1.0, 8.0, 32.0])
NUM_QUESTIONS = 500
NUM_REPLICATES = 20


def _g(log_q, k):
  """−log(1 − q^k) from log q, both branches of log(1 − e^x) (the module's is not reused)."""
  x = np.asarray(k * log_q, np.float64)
  with np.errstate(divide="ignore"):
    return -np.where(x > -np.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def _adaptive_reference(a, b, k):
  """T(k) by scipy.integrate.quad: p < 1/2 in t = log p (tail below e^-600 in closed form),
  p > 1/2 in s = log(1 − p)."""
  lb, t0 = special.betaln(a, b), -600.0
  def lower(t):
    return float(_g(np.log1p(-np.exp(t)), k) * np.exp(a * t + (b - 1) * np.log1p(-np.exp(t)) - lb))
  def upper(s):
    return float(_g(s, k) * np.exp(b * s + (a - 1) * np.log1p(-np.exp(s)) - lb))
  points = [x for x in (-np.log(k) - 5, special.digamma(a) - special.digamma(a + b))
            if t0 < x < np.log(0.5)]
  v1 = integrate.quad(lower, t0, np.log(0.5), limit=1000, epsabs=0, epsrel=1e-13,
                      points=points or None)[0]
  v2 = integrate.quad(upper, -np.inf, np.log(0.5), limit=1000, epsabs=0, epsrel=1e-13)[0]
  return v1 + v2 + np.exp(a * t0 - lb) / a * (-np.log(k) - t0 + 1 / a)


def _jeffreys_task_mean(n_Q, c_Q, k_K):
  """The per-question Jeffreys posterior mean of pass@k, averaged (approach1's estimator before
  this module), kept here to document its bias."""
  a, b = c_Q[:, None] + 0.5, n_Q[:, None] - c_Q[:, None] + 0.5
  log_fail = special.betaln(a, b + k_K) - special.betaln(a, b)
  return (-np.log(-np.expm1(log_fail))).mean(0)


def _simulate(a, b, n, seed, num_groups=NUM_REPLICATES, num_questions=NUM_QUESTIONS):
  rng = np.random.default_rng(seed)
  p_GxQ = rng.beta(a, b, (num_groups, num_questions))
  c_GxQ = rng.binomial(n, p_GxQ).astype(np.float64)
  return np.broadcast_to(n, c_GxQ.shape).astype(np.float64), c_GxQ


@pytest.mark.parametrize("a", [0.01, 0.3, 3.0, 300.0])
@pytest.mark.parametrize("b", [0.1, 3.0, 300.0])
def test_beta_integral_matches_adaptive_quadrature(a, b):
  ks = np.array([1.0, 8.0, 1024.0])
  got = targets.expected_neg_log_passk(a, b, ks)
  want = np.array([_adaptive_reference(a, b, k) for k in ks])
  np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-200)  # below: float underflow


def test_beta_integral_at_k1_is_digamma_difference():
  a, b = np.meshgrid([0.01, 0.3, 3.0, 300.0], [0.1, 3.0, 300.0])
  got = targets.expected_neg_log_passk(a, b, [1.0])[..., 0]
  np.testing.assert_allclose(got, special.digamma(a + b) - special.digamma(a), rtol=1e-10)


@pytest.mark.parametrize("a, b", LAWS)
def test_beta_integral_matches_monte_carlo(a, b):
  p = np.random.default_rng(0).beta(a, b, 1_000_000)
  draws_SxK = _g(np.log1p(-p)[:, None], K)
  se = draws_SxK.std(0) / np.sqrt(len(p))
  assert np.all(np.abs(targets.expected_neg_log_passk(a, b, K) - draws_SxK.mean(0)) < 4 * se)


@pytest.mark.parametrize("a, b", LAWS)
def test_mle_recovers_beta(a, b):
  n_Q, c_Q = _simulate(a, b, 64, seed=1, num_groups=1, num_questions=20_000)
  a_G, b_G, status_G = targets.beta_binomial_mle(n_Q[0], c_Q[0])
  assert status_G.tolist() == ["ok"]
  np.testing.assert_allclose([a_G[0], b_G[0]], [a, b], rtol=0.1)


@pytest.mark.parametrize("a, b", LAWS)
def test_samples_route_is_consistent_and_jeffreys_is_not(a, b):
  """20 tasks of 500 questions: the estimate's mean over them is within 10% of the truth at
  n = 64 and n = 1024 (one task's own sd is up to ~14% at n = 64, the questions' sampling
  noise, not bias), the two n agree within 10%, and se_log matches the spread of log T over
  tasks; the Jeffreys mean is > 10% low at n = 64 and moves with n."""
  truth_K = targets.expected_neg_log_passk(a, b, K)
  est, jeffreys = {}, {}
  for n in (64, 1024):
    n_GxQ, c_GxQ = _simulate(a, b, n, seed=2)
    group_Q = np.repeat(np.arange(NUM_REPLICATES), NUM_QUESTIONS)
    got = targets.neg_log_passk_from_samples(n_GxQ.ravel(), c_GxQ.ravel(), K, group_Q)
    assert set(got.status_G) == {"ok"}
    est[n] = got.mean_GxK.mean(0)
    ratio_K = np.log(got.mean_GxK).std(0) / got.se_log_GxK.mean(0)
    assert np.all((0.6 < ratio_K) & (ratio_K < 1.6))
    jeffreys[n] = np.mean([_jeffreys_task_mean(n_Q, c_Q, K) for n_Q, c_Q in zip(n_GxQ, c_GxQ)], 0)
    np.testing.assert_allclose(est[n], truth_K, rtol=0.1)
  np.testing.assert_allclose(est[64], est[1024], rtol=0.1)
  assert np.all(jeffreys[64] < 0.9 * truth_K)
  assert np.all(jeffreys[64] < 0.9 * jeffreys[1024])


def test_samples_route_with_varying_n():
  a, b = LAWS[0]
  rng = np.random.default_rng(3)
  p_Q = rng.beta(a, b, NUM_REPLICATES * NUM_QUESTIONS)
  n_Q = rng.integers(2, 1025, p_Q.shape).astype(np.float64)
  c_Q = rng.binomial(n_Q.astype(np.int64), p_Q).astype(np.float64)
  got = targets.neg_log_passk_from_samples(n_Q, c_Q, K, np.arange(p_Q.size) % NUM_REPLICATES)
  np.testing.assert_allclose(got.mean_GxK.mean(0), targets.expected_neg_log_passk(a, b, K),
                             rtol=0.1)


def test_nll_route_is_exact_and_k1_is_the_mean_nll():
  p_Q = np.random.default_rng(4).beta(0.3, 3.0, 1000)
  nll_Q = -np.log(p_Q)
  nll_Q[:3] = [0.0, 1e-12, 700.0]
  got = targets.neg_log_passk_from_nll(nll_Q, K)
  np.testing.assert_allclose(got.mean_GxK[0, 0], nll_Q.mean(), rtol=1e-14)
  with np.errstate(divide="ignore"):  # nll = 0: log(1 − p) = −inf, pass@k = 1
    direct_K = _g(np.log1p(-np.exp(-nll_Q))[:, None], K).mean(0)
  np.testing.assert_allclose(got.mean_GxK[0], direct_K, rtol=1e-12)
  assert got.status_G.tolist() == ["ok"]


def test_degenerate_groups_are_flagged_with_finite_floors():
  n_Q = np.full(400, 64.0)
  c_Q = np.concatenate([np.zeros(100), np.full(100, 64.0), np.tile([0.0, 64.0], 50),
                        _simulate(0.3, 3.0, 64, seed=5, num_groups=1, num_questions=100)[1][0]])
  group_Q = np.repeat(["none", "all", "zero_or_all", "regular"], 100)
  got = targets.task_targets(group_Q, n_Q, c_Q, np.full(400, np.nan), K)
  status = dict(zip(got.groups, got.status_G))
  assert status == {"none": "no_success", "all": "all_success", "zero_or_all": "no_spread",
                    "regular": "ok"}
  assert np.all(np.isfinite(got.mean_GxK) & (got.mean_GxK > 0))
  assert np.isnan(got.a_G[got.status_G != "ok"]).all()
  assert np.isnan(got.se_log_GxK[got.status_G != "ok"]).all()
  assert np.all(got.se_log_GxK[got.groups == "regular"] < 0.5)
  few = targets.neg_log_passk_from_samples(n_Q[:100], np.r_[2.0, 5.0, 9.0, np.zeros(97)], K)
  assert few.status_G.tolist() == ["ok"] and np.all(few.se_log_GxK > 0.5)  # barely identified
  # no_success: every question at the 95% upper bound of the pooled rate, 1 − 0.05^(1/6400).
  p_up = -np.expm1(np.log(0.05) / 6400)
  np.testing.assert_allclose(got.mean_GxK[got.groups == "none"][0],
                             -np.log(-np.expm1(K * np.log1p(-p_up))), rtol=1e-12)
  alone = targets.neg_log_passk_from_samples(n_Q[300:], c_Q[300:], K)
  np.testing.assert_allclose(got.mean_GxK[got.groups == "regular"][0], alone.mean_GxK[0],
                             rtol=1e-9)
  ones = targets.neg_log_passk_from_samples(np.ones(50), np.arange(50) % 2, K)
  assert ones.status_G.tolist() == ["no_spread"]


def test_task_targets_groups_models_in_unique_order_and_checks_inputs():
  n_Q, c_Q = _simulate(0.3, 3.0, 64, seed=6, num_groups=3, num_questions=200)
  model_Q = np.repeat(["m2", "m0", "m1"], 200)
  order = np.random.default_rng(7).permutation(600)
  nll_Q = np.linspace(0.1, 5.0, 600)
  got = targets.task_targets(model_Q[order], n_Q.ravel()[order], c_Q.ravel()[order],
                             nll_Q[order], K)
  assert got.groups.tolist() == ["m0", "m1", "m2"]
  for i, m in enumerate(got.groups):
    rows = model_Q == m
    one = targets.neg_log_passk_from_samples(n_Q.ravel()[rows], c_Q.ravel()[rows], K)
    np.testing.assert_allclose(got.mean_GxK[i], one.mean_GxK[0], rtol=1e-9)
  by_nll = targets.task_targets(model_Q, n_Q.ravel(), c_Q.ravel(), nll_Q, K, source="nll")
  np.testing.assert_allclose(by_nll.mean_GxK[:, 0],
                             [nll_Q[model_Q == m].mean() for m in by_nll.groups], rtol=1e-14)
  with pytest.raises(ValueError, match="source"):
    targets.task_targets(model_Q, n_Q.ravel(), c_Q.ravel(), nll_Q, K, source="jeffreys")
  with pytest.raises(ValueError, match="0 <= c <= n"):
    targets.neg_log_passk_from_samples([4.0, 4.0], [5.0, 1.0], K)
  with pytest.raises(ValueError, match="k_K"):
    targets.neg_log_passk_from_samples([4.0, 4.0], [2.0, 1.0], [0.5])
  with pytest.raises(ValueError, match="nll_Q"):
    targets.neg_log_passk_from_nll([0.5, np.nan], K)
  with pytest.raises(ValueError, match="no sampled question"):
    targets.neg_log_passk_from_samples([0.0, 0.0], [0.0, 0.0], K)
