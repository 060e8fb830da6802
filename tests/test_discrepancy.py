"""Model discrepancy: distances, the scale fit, widening of draws, and the backtest folds."""

import jax
import numpy as np
import pytest

from t2jax import passk
from t2jax.fit import backtest
from t2jax.fit import planning
from t2jax.laws import discrepancy


def test_distance_counts_only_what_lies_beyond_the_fitted_rows():
  log_tpp, log_c = np.log(20.0), np.log(6.0 * 1e5 * 2e6)
  d = discrepancy.distance(np.array([1e5, 1e5, 4e5, 1e4]), np.array([2e6, 8e6, 8e6, 1e5]),
                           log_tpp, log_c, xp=np)
  np.testing.assert_allclose(d, [0.0, np.log(4) + np.log(4), np.log(16), 0.0], atol=1e-12)


def test_fit_scale_recovers_a_known_growth_of_the_error():
  rng = np.random.default_rng(0)
  d = rng.uniform(0, 2, 4000)
  noise = np.full_like(d, 0.05)
  e = rng.standard_normal(d.size) * np.hypot(noise, 0.1 + 0.5 * d)
  got = discrepancy.fit_scale(e, d, noise)
  assert abs(got["s0"] - 0.1) < 0.03 and abs(got["s1"] - 0.5) < 0.05, got
  flat = discrepancy.fit_scale(rng.standard_normal(500) * 0.05, d[:500], noise[:500])
  assert flat["s0"] < 0.02 and flat["s1"] < 0.02, flat  # noise alone: no discrepancy
  assert discrepancy.fit_scale([], [], [])["num_points"] == 0
  with pytest.raises(ValueError, match="finite"):
    discrepancy.fit_scale([np.nan], [0.0], [0.1])


def test_distance_in_fitted_spans():
  rng = discrepancy.fitted_range(np.array([1e5, 1e5]), np.array([1e6, 4e6]))  # D/N 10 … 40
  assert np.isclose(rng["tpp_span"], np.log(4)) and np.isclose(rng["compute_span"], np.log(4))
  one = discrepancy.fitted_range(np.array([1e5]), np.array([1e6]))
  assert one["tpp_span"] == discrepancy.SPAN_MIN  # a single level counts as a factor of 2
  N, D = np.array([1e5]), np.array([4e7])  # D/N and 6ND 10x beyond the largest fitted
  args = (rng["log_tpp_max"], rng["log_compute_max"], rng["tpp_span"], rng["compute_span"])
  np.testing.assert_allclose(discrepancy.distance(N, D, *args, rho=0.0, xp=np),
                             2 * np.log(10))
  np.testing.assert_allclose(discrepancy.distance(N, D, *args, rho=1.0, xp=np),
                             2 * np.log(10) / np.log(4))
  scale = dict(rng, rho=1.0)
  np.testing.assert_allclose(discrepancy.scale_distance(scale, N, D), 2 * np.log(10) / np.log(4))


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_fit_law_scale_recovers_how_error_scales_with_the_fitted_span(rho):
  """Folds of narrow and wide spans: the error sd grows with excess/span^rho; the fit finds rho."""
  r = np.random.default_rng(1)
  span = r.choice([np.log(2), np.log(8), np.log(64)], 3000)
  tpp_excess = r.uniform(0, 3, span.size)
  noise = np.full(span.size, 0.01)
  e = r.standard_normal(span.size) * np.hypot(noise, 0.2 * tpp_excess / span ** rho)
  got = discrepancy.fit_law_scale({"a": (e, tpp_excess, 0 * e, span, span, noise)})
  assert got["rho"] == rho, got
  assert abs(got["fits"]["a"]["s1"] - 0.2) < 0.03, got


def test_empirical_logit_error_is_bounded_at_zero_and_one():
  e = discrepancy.error("logit", [0.0, 1.0], [0.9, 0.1], num_questions=100)
  assert np.all(np.isfinite(e)) and np.all(np.abs(e) < 2 * np.log(201))
  np.testing.assert_allclose(discrepancy.error("log", [2.0], [1.0]), [np.log(2)])


def test_widen_moves_each_draw_by_its_own_error_and_grows_with_distance():
  scale = {"s0": {"a": 0.1, "b": 0.0}, "s1": {"a": 1.0, "b": 0.0}, "log_tpp_max": np.log(20.0),
           "log_compute_max": np.log(1e15)}
  keys = discrepancy.draws(scale, 3, ["a", "b"], seed=0)
  assert all(v.shape == (3, 2) for v in keys.values())
  one = {k: v[0] for k, v in keys.items()}
  value = np.full((2, 2), 0.5)  # (T, query)
  N, D = np.array([1e5, 1e5]), np.array([2e6, 2e7])  # D/N 20 (inside), 200 (d = log 10)
  got = np.asarray(discrepancy.widen("logit", value, one, N, D))
  z = keys["disc_z"][0, 0]
  np.testing.assert_allclose(got[0], 1 / (1 + np.exp(-np.array([0.1, 0.1 + np.log(10)]) * z)))
  np.testing.assert_allclose(got[1], 0.5)  # task b: no discrepancy
  np.testing.assert_allclose(np.asarray(discrepancy.widen("log", value, one, N, D))[0],
                             0.5 * np.exp(np.array([0.1, 0.1 + np.log(10)]) * z))
  np.testing.assert_array_equal(discrepancy.widen("log", value, {"E": 1.0}, N, D), value)


def test_planner_objective_without_discrepancy_keys_is_the_laws_own():
  from t2jax.laws import approach2, simulate
  params = {k: np.array([v, v]) for k, v in simulate.APPROACH2_TASKS["gen"].items()}
  with jax.enable_x64(True):
    got = planning.PASSK_FNS["approach2"](params, 1e7, 1e9, 8.0)
    want = approach2.task_mean_passk(params, 1e7, 1e9, 8.0)
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_folds_roll_the_origin_and_leave_sizes_out():
  # The cpu ladder's fitted rungs: 4 sizes × D/N 10, 20 (40k also 40), 150k only at 10.
  N = np.array([4e4, 4e4, 4e4, 6e4, 6e4, 9e4, 9e4, 1.5e5])
  D = N * np.array([10.05, 20.01, 40.02, 10.06, 20.06, 10.03, 20.01, 10.01])
  folds = backtest.folds(N, D)
  labels = [f[1] for f in folds]
  assert all(f[2].sum() >= backtest.MIN_MODELS and len(np.unique(N[f[2]])) >= 2 for f in folds)
  assert len({f[2].tobytes() for f in folds}) == len(folds)  # no training set twice
  tpp = [f for f in folds if f[0] == "tokens_per_param"]
  assert len(tpp) == 1 and set(np.flatnonzero(~tpp[0][2])) == {2}, labels  # 20.01 ~ 20.06 merged
  # Without 150k is the top compute fold's training set already; without 40k keeps 5 models.
  assert {f[1] for f in folds if f[0] == "size"} == {"without N = 6e+04", "without N = 9e+04"}
  assert any(f[0] == "compute" and set(np.flatnonzero(~f[2])) == {7} for f in folds)


def test_measured_noise_matches_the_spread_of_simulated_measurements():
  """The sd of a task's measured mean pass@k (empirical logit) over 40 questions, 8 samples each
  (and 10 NLL-only ones), against 4,000 simulated measurements: within 5%; the between-question
  spread alone (`question_noise`) is short of it where k nears n."""
  a, b, n, Q, ks = 0.8, 1.6, 8, 50, np.array([1.0, 4.0, 8.0])
  rng = np.random.default_rng(0)
  n_Q = np.array([n] * 40 + [0] * 10)
  p_RxQ = rng.beta(a, b, (4000, Q))
  c_RxQ = rng.binomial(n, p_RxQ)
  logit = lambda x: np.log(x) - np.log1p(-x)
  with jax.enable_x64(True):
    pk, pk2 = (np.asarray(passk.beta_passk(a, b, x)) for x in (ks, 2 * ks))
  spread = []
  for k in ks:
    est_RxQ = np.concatenate([passk.unbiased_passk(n, c_RxQ[:, :40], int(k)),
                              1 - (1 - p_RxQ[:, 40:]) ** k], axis=1)
    spread.append(np.std(logit(discrepancy.shrink(est_RxQ.mean(axis=1), Q))))
  got = backtest.measured_noise(a, b, n_Q, ks, pk, pk2)
  np.testing.assert_allclose(got, spread, rtol=0.05)
  assert backtest.question_noise(pk, pk2, Q)[-1] < 0.8 * spread[-1]
