"""Approach 1: the per-task table of targets (from samples or NLLs), parameter recovery."""

import jax
import jax.numpy as jnp
import numpy as np

from t2jax.laws import approach1, optim, simulate, table, targets

TRUTH = simulate.APPROACH1


def _results(rng):
  """3 models × 2 tasks × 50 questions, n = 8; model N=1e6 never solves task a."""
  rows = []
  for i, n in enumerate([1e6, 1e7, 1e8]):
    for t in ("a", "b"):
      p_Q = rng.beta(0.5 + i, 2.0, 50)
      c_Q = rng.binomial(8, p_Q) * (0 if (t, i) == ("a", 0) else 1)
      rows += [dict(model_id=f"m{i}", N=n, D=20 * n, task=t, question_id=f"q{q}", n=8,
                    c=int(c_Q[q]), nll=float(-np.log(p_Q[q]))) for q in range(50)]
  return table.results_from_rows(sorted(rows[0]), rows, "mem")


def test_table_from_results_uses_the_task_targets_and_censors():
  assert approach1.default_k_grid(64).tolist() == [1, 2, 4, 8, 16, 32, 64]
  results = _results(np.random.default_rng(0))
  tables = approach1.table_from_results(results)
  assert set(tables) == {"a", "b"}
  a, b = tables["a"], tables["b"]
  # m0 never solved task a: censored, left out; the others are the Beta-binomial targets.
  assert a.censored == {"m0": "no_success"} and b.censored == {}
  np.testing.assert_array_equal(a.k, np.tile([1, 2, 4, 8], 2))
  np.testing.assert_array_equal(a.N, np.repeat([1e7, 1e8], 4))
  np.testing.assert_array_equal(a.model_id, np.repeat(["m1", "m2"], 4))
  np.testing.assert_array_equal(b.D, np.repeat([2e7, 2e8, 2e9], 4))
  rows = results.select(results.task == "b")
  want = targets.task_targets(rows.model_id, rows.n, rows.c, rows.nll, [1, 2, 4, 8])
  np.testing.assert_allclose(b.loss, want.mean_GxK.ravel(), rtol=1e-12)
  assert np.all(np.diff(b.loss.reshape(3, 4), axis=1) < 0)  # more samples, higher pass@k
  # From NLLs: p = exp(−nll) exactly, so k = 1 is the mean NLL, and nobody is censored.
  by_nll = approach1.table_from_results(results, k_grid=[1.0, 4.0], source="nll")["a"]
  assert by_nll.censored == {} and len(by_nll.loss) == 6
  m0_R = (results.task == "a") & (results.model_id == "m0")
  np.testing.assert_allclose(by_nll.loss[0], results.nll[m0_R].mean(), rtol=1e-12)


def test_table_from_results_is_consistent_in_n():
  """The same questions sampled 16 or 256 times give the same targets, within sampling noise
  (test_targets: the per-question Jeffreys mean it replaced does not)."""
  rng = np.random.default_rng(1)
  p_Q = rng.beta(0.3, 3.0, 2000)
  means = []
  for n in (16, 256):
    rows = [dict(N=N, D=20 * N, task="t", question_id=f"q{q}", n=n,
                 c=int(rng.binomial(n, p_Q[q]))) for N in (1e6, 1e7) for q in range(len(p_Q))]
    t = approach1.table_from_results(table.results_from_rows(sorted(rows[0]), rows, "mem"),
                                     k_grid=[1.0, 16.0])["t"]
    means.append(t.loss)
  np.testing.assert_allclose(means[0], means[1], rtol=0.1)


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


def test_posterior_warm_start_survives_a_dropped_term():
  """A point fit that dropped a term (coefficient 0 with an exponent in the thousands, as a few
  noisy rungs can give) still warm-starts NUTS: the term starts negligible, not at −inf."""
  N, D = simulate.ladder(num_sizes=4, num_ratios=3)
  N_R, D_R, k_R, loss_R = simulate.approach1_table(N, D, [1.0, 4.0, 16.0], noise=0.01, seed=0)
  dropped = optim.LawFit(dict(TRUTH, A=0.0, alpha=36085.7), 0.0, 1, 1)
  post = approach1.sample_posterior(N_R, D_R, k_R, loss_R, point=dropped, num_chains=1,
                                    num_warmup=10, num_samples=10)
  assert all(np.all(np.isfinite(v)) for v in post.draws.values())


def test_warm_start_is_finite_when_a_dropped_term_overflows():
  """A dropped term can also come back with an overflowing coefficient (A = inf at alpha ~ 1e3,
  seen on the CPU ladder's recall task): the start stays finite, the term negligible."""
  N, D = simulate.ladder(num_sizes=4, num_ratios=3)
  N_R, D_R, k_R, loss_R = simulate.approach1_table(N, D, [1.0, 4.0, 16.0], noise=0.01, seed=0)
  logx = np.log(np.stack([N_R, D_R, k_R], axis=1))
  for bad in (dict(A=np.inf, alpha=1200.0), dict(A=0.0, alpha=36085.7), dict(B=np.inf, beta=np.inf)):
    theta = approach1.warm_start(dict(TRUTH, **bad), logx, loss_R)
    assert np.all(np.isfinite(theta)), bad
    term = np.exp(theta[1] - theta[4] * logx[:, 0].mean()) if "A" in bad else None
    assert term is None or term <= 1e-6 * loss_R.min() * 1.0001
  good = approach1.warm_start(TRUTH, logx, loss_R)
  assert np.all(np.isfinite(good)) and np.isclose(good[4], TRUTH["alpha"])
