"""Approach 1: per-question −log pass@k, the per-task table, parameter recovery."""

import jax
import jax.numpy as jnp
import numpy as np

from t2jax import passk
from t2jax.laws import approach1, optim, simulate, table

TRUTH = simulate.APPROACH1


def test_question_neg_log_passk_estimators():
  k_K = approach1.default_k_grid(64)
  np.testing.assert_array_equal(k_K, [1, 2, 4, 8, 16, 32, 64])
  n_Q = np.array([64, 64, 64, 0])
  c_Q = np.array([0, 20, 64, 0])
  nll_Q = np.array([np.nan, np.nan, np.nan, 0.7])
  out_QxK = approach1.question_neg_log_passk(n_Q, c_Q, nll_Q, k_K)
  assert out_QxK.shape == (4, 7) and np.all(np.isfinite(out_QxK)) and np.all(out_QxK >= 0)
  assert np.all(np.diff(out_QxK, axis=1) <= 0)  # more samples, higher pass@k
  # A never-solved question stays finite (Jeffreys posterior mean, not the plug-in 0).
  assert out_QxK[0, 0] > 3.0
  # With c well inside (0, n) it is within O(1/n) of the unbiased estimator.
  unbiased = -np.log(passk.unbiased_passk(64, 20, k_K[:4]))
  np.testing.assert_allclose(out_QxK[1, :4], unbiased, atol=0.02)
  # NLL-only: p = exp(−nll), pass@k = 1 − (1 − p)^k.
  p = np.exp(-0.7)
  np.testing.assert_allclose(out_QxK[3], -np.log(1 - (1 - p) ** k_K), rtol=1e-12)


def test_table_from_results_means_over_questions():
  rows = [dict(N=n, D=20 * n, task=t, question_id=f"q{q}", n=8, c=(q * i) % 9, nll=1.0)
          for i, n in enumerate([1e6, 1e7, 1e8], 1) for t in ("a", "b") for q in range(5)]
  results = table.results_from_rows(sorted(rows[0]), rows, "mem")
  tables = approach1.table_from_results(results)
  assert set(tables) == {"a", "b"}
  t = tables["a"]
  np.testing.assert_array_equal(t.k, np.tile([1, 2, 4, 8], 3))
  np.testing.assert_array_equal(t.N, np.repeat([1e6, 1e7, 1e8], 4))
  c_Q = np.array([(q * 2) % 9 for q in range(5)])
  want = approach1.question_neg_log_passk(np.full(5, 8), c_Q, np.ones(5), [1, 2, 4, 8]).mean(0)
  np.testing.assert_allclose(t.loss[4:8], want, rtol=1e-12)


def test_fit_recovers_truth_and_predictions():
  """7 sizes × 4 ratios × k in 1..1024 (308 points), 1% noise, the default 2,592-start grid.
  Tolerances: exponents within 0.03, E within 0.02 absolute (E = 0.1 is a small floor),
  G within 5%; the fit beats the truth on the Huber objective."""
  N, D = simulate.ladder(num_sizes=7, num_ratios=4)
  N_R, D_R, k_R, loss_R = simulate.approach1_table(N, D, 2.0 ** np.arange(11), noise=0.01, seed=0)
  fit = approach1.fit(N_R, D_R, k_R, loss_R)
  p = fit.params
  for name in ("alpha", "beta", "gamma"):
    assert abs(p[name] - TRUTH[name]) < 0.03, (name, p[name])
  assert abs(p["E"] - TRUTH["E"]) < 0.02
  assert abs(p["G"] / TRUTH["G"] - 1) < 0.05
  theta = lambda q: np.array([np.log(q[n]) for n in ("E", "A", "B", "G")]
                             + [q[n] for n in ("alpha", "beta", "gamma")])
  logx = np.log(np.stack([N_R, D_R, k_R], axis=1))
  with jax.enable_x64(True):
    truth_objective = float(optim.power_sum_objective(jnp.asarray(theta(TRUTH)), jnp.asarray(logx),
                                                      jnp.log(jnp.asarray(loss_R)), 1e-3))
  assert fit.objective <= truth_objective * (1 + 1e-9)
  query = (np.array([3e7, 3e8]), np.array([1e10, 1e11]), np.array([1.0, 100.0]))
  np.testing.assert_allclose(approach1.neg_log_passk(p, *query),
                             approach1.neg_log_passk(TRUTH, *query), rtol=0.03)
  np.testing.assert_allclose(approach1.passk(p, *query), np.exp(-approach1.neg_log_passk(p, *query)),
                             rtol=1e-6)


def test_predictions_broadcast_over_draws():
  draws = {k: np.full((3,), v) for k, v in TRUTH.items()}
  out = approach1.passk(draws, np.array([1e7, 1e8])[:, None], 1e10, np.array([1.0, 4.0, 16.0]))
  assert out.shape == (3, 2, 3)
  assert np.all(np.diff(np.asarray(out), axis=-1) > 0)
