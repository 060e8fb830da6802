"""Approach 2: aggregation, the likelihood, MAP and NUTS recovery, Posterior save/load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from t2jax import io, passk
from t2jax.laws import approach2, simulate, table
from t2jax.laws.posterior import Posterior

TASKS = simulate.APPROACH2_TASKS
FLOORS = {name: p["floor"] for name, p in TASKS.items()}
REPO = io.REPO_ROOT
LINK = ("theta1", "theta2", "theta3", "theta4")


def _results(num_sizes, num_ratios, num_questions, n, seed, nll_only_every=0):
  N, D = simulate.ladder(num_sizes=num_sizes, num_ratios=num_ratios)
  rows = simulate.approach2_rows(N, D, num_questions=num_questions, n=n, seed=seed)
  for row in rows[::nll_only_every or len(rows) + 1]:
    row["n"] = row["c"] = None
  return table.results_from_rows(sorted(rows[0]), rows, "simulated")


@pytest.fixture(scope="module")
def ladder_fit():
  """80 models × 2 tasks × 400 questions, 32 samples each; the MAP fit."""
  data = approach2.prepare(_results(10, 8, 400, 32, seed=1), floors=FLOORS)
  return data, approach2.fit_mle(data)


def _task(params, i):
  return {k: float(np.asarray(v)[..., i]) for k, v in params.items()}


def _check_recovery(data, params, label):
  """Tolerances for this ladder (1.5% noise on each model's mean NLL): link θ1, θ2, θ4 within 0.15,
  θ3 within 0.2; α, β within 0.08; E within 10%; E[pass@k] for k = 1, 16 within 0.02 across the
  ladder's corners and centre (the quantity the planner uses)."""
  for i, name in enumerate(data.tasks):
    got, truth = _task(params, i), TASKS[name]
    for key, tol in (("theta1", 0.15), ("theta2", 0.15), ("theta3", 0.2), ("theta4", 0.15),
                     ("alpha", 0.08), ("beta", 0.08)):
      assert abs(got[key] - truth[key]) < tol, (label, name, key, got[key], truth[key])
    assert abs(got["E"] / truth["E"] - 1) < 0.1, (label, name, got["E"])
    N, D = np.meshgrid([5e6, 6e7, 9e8], [1e8, 1e10, 1e12])
    _, a, b = simulate.approach2_beta(truth, N, D)
    with jax.enable_x64(True):
      for k in (1, 16):
        want = np.asarray(passk.beta_passk(a, b, float(k)))
        got_passk = np.asarray(approach2.expected_passk(got, N, D, k))
        assert np.max(np.abs(got_passk - want)) < 0.02, (label, name, k)


def test_prepare_aggregates_counts_and_nll_only_rows():
  results = _results(3, 2, 40, 8, seed=0, nll_only_every=7)
  data = approach2.prepare(results, floors=FLOORS)
  group_R = approach2.row_groups(results)
  assert len(data.task_G) == 12 and len(data.n_K) < results.sampled.sum()
  questions_G = np.bincount(data.group_K, data.weight_K, 12) + data.beta_count_G
  np.testing.assert_array_equal(questions_G, np.bincount(group_R, minlength=12))
  np.testing.assert_array_equal(data.beta_count_G, np.bincount(group_R[~results.sampled],
                                                               minlength=12))
  np.testing.assert_allclose(data.nll_G, np.bincount(group_R, results.nll) / questions_G)


def test_question_slope_is_each_groups_least_squares_slope():
  results = _results(3, 2, 40, 8, seed=0, nll_only_every=7)
  data = approach2.prepare(results, floors=FLOORS)
  group_R, both_R = approach2.row_groups(results), results.sampled & results.has_nll
  for g in range(len(data.task_G)):
    sel = both_R & (group_R == g)
    rate, rel = results.c[sel] / results.n[sel], results.nll[sel] / results.nll[sel].mean()
    assert data.pass_rate_G[g] == pytest.approx(rate.mean())
    assert data.slope_G[g] == pytest.approx(np.polyfit(rate, rel, 1)[0])
  # The simulator's NLL falls as a question's pass rate rises: the two errors share the questions.
  assert np.all(data.slope_G < 0)
  rate_G, slope_G = approach2.question_slope(np.array([0, 0, 0, 1, 1]), np.ones(5),
                                             np.array([0.5, 0.5, 0.5, 0.1, 0.9]), 2)
  np.testing.assert_allclose(rate_G, [0.5, 0.5])
  np.testing.assert_array_equal(slope_G, [0.0, 0.0])  # no spread in rate; under 3 questions


@pytest.mark.parametrize("likelihood", ["gammaln", "rising"])
def test_aggregated_likelihood_equals_per_row_terms(likelihood):
  results = _results(3, 2, 40, 8, seed=0, nll_only_every=7)
  data = approach2.prepare(results, floors=FLOORS, likelihood=likelihood)
  assert (data.above_c_GxJ is None) == (likelihood == "gammaln")
  group_R, sampled_R = approach2.row_groups(results), results.sampled
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    a_G, b_G = jnp.asarray(rng.uniform(0.2, 5, 12)), jnp.asarray(rng.uniform(0.2, 5, 12))
    got = float(approach2.accuracy_log_likelihood(data, a_G, b_G))
  # scipy as the reference: jax's betaln (inside dist.BetaBinomial) is only good to ~1e-8.
  a_R, b_R = np.asarray(a_G)[group_R], np.asarray(b_G)[group_R]
  s = sampled_R
  want = stats.betabinom.logpmf(results.c[s], results.n[s], a_R[s], b_R[s]).sum()
  p_R = np.exp(-results.nll[~sampled_R])
  want += stats.beta.logpdf(p_R, a_R[~sampled_R], b_R[~sampled_R]).sum()
  np.testing.assert_allclose(got, want, rtol=1e-11)


def test_precision_cap_keeps_the_likelihood_exact():
  """A huge linear predictor log ν (85, as a MAP search on the cpu ladder reached) is capped, so
  the gammaln form stays exact and below 0 (uncapped, cancellation made it +1e22)."""
  assert simulate.LOG_NU_MAX == approach2.LOG_NU_MAX
  results = _results(3, 2, 40, 16, seed=0)
  results = results.select(results.sampled)
  data = approach2.prepare(results, floors=FLOORS, likelihood="gammaln")
  z = {k: np.zeros(2) for k in approach2.SITES}
  z["eta3"] = np.full(2, 85.0)
  with jax.enable_x64(True):
    _, a_G, b_G = approach2.group_beta(z, data)
    got = float(approach2.accuracy_log_likelihood(data, a_G, b_G))
  a_G, b_G = np.asarray(a_G), np.asarray(b_G)
  np.testing.assert_allclose(a_G + b_G, 1e4, rtol=1e-9)
  group_R = approach2.row_groups(results)
  want = stats.betabinom.logpmf(results.c, results.n, a_G[group_R], b_G[group_R]).sum()
  assert want < 0
  np.testing.assert_allclose(got, want, rtol=1e-9)


def test_map_is_sane_on_the_cpu_ladder():
  """The committed cpu ladder's tables, where an uncapped ν sent the MAP to a fitted task loss of
  0.02 against observed 3.4-18 nats: the loss law now tracks every group within a factor of 2."""
  from t2jax.fit import config as fit_config, inputs as fit_inputs
  cfg = fit_config.default_config()
  inputs = fit_inputs.load_inputs(f"{REPO}/docs/cpu-ladder/results.jsonl",
                                  f"{REPO}/docs/cpu-ladder/rungs.jsonl", cfg)
  data = approach2.prepare(inputs.results.select(~inputs.results_heldout), floors=inputs.floors)
  params = approach2.fit_mle(data)
  p = {k: v[data.task_G] for k, v in params.items()}
  fitted_G = (p["E"] + p["A"] * np.exp(-p["alpha"] * data.logN_G)
              + p["B"] * np.exp(-p["beta"] * data.logD_G))
  ratio_G = fitted_G / data.nll_G
  assert np.all((ratio_G > 0.5) & (ratio_G < 2)), ratio_G


def test_prepare_rejects_bad_floors_and_missing_nll():
  results = _results(3, 2, 10, 4, seed=0)
  with pytest.raises(ValueError, match=r"floors has no entry for tasks \['mc4'\]"):
    approach2.prepare(results, floors={"gen": 0.0})
  with pytest.raises(ValueError, match="0 <= floor < ceil <= 1"):
    approach2.prepare(results, floors=FLOORS, ceilings={"gen": 1.0, "mc4": 0.2})
  no_nll = results.select(np.ones(len(results), bool))
  no_nll = table.ResultsTable(**{**no_nll.__dict__, "nll": np.full(len(results), np.nan)})
  with pytest.raises(ValueError, match="needs gold-answer `nll`"):
    approach2.prepare(no_nll)


def test_map_recovers_truth(ladder_fit):
  data, params = ladder_fit
  assert set(params) == set(approach2.PARAMS)
  np.testing.assert_array_equal(params["floor"], [0.0, 0.25])  # tasks sorted: gen, mc4
  _check_recovery(data, params, "map")
  sites = approach2.from_params(params, data)
  back = approach2.to_params({k: jnp.asarray(v) for k, v in sites.items()}, data)
  for k in approach2.PARAMS:
    np.testing.assert_allclose(np.asarray(back[k]), params[k], rtol=1e-6, err_msg=k)


def test_expected_passk_shapes_and_monotonicity(ladder_fit):
  _, params = ladder_fit
  out = approach2.expected_passk(params, np.array([1e7, 1e8])[:, None], 1e10,
                                 np.array([1.0, 4.0, 64.0]))
  assert out.shape == (2, 2, 3)
  assert np.all(np.diff(np.asarray(out), axis=-1) > 0)
  assert approach2.task_mean_passk(params, 1e8, 1e10, np.array([1.0, 4.0])).shape == (2,)


@pytest.mark.slow
def test_nuts_posterior_recovers_truth_and_round_trips(ladder_fit, tmp_path):
  """Tiny NUTS (2 chains × 100 warmup + 100 samples, diagonal mass) from the MAP: medians meet the MAP
  tolerances; diagnostics are finite (the fixed floor/ceil get r-hat 1); save/load is exact."""
  data, params = ladder_fit
  post = approach2.sample_posterior(data, num_chains=2, num_warmup=100, num_samples=100, seed=0,
                                    mle=params, dense_mass=False)
  assert post.num_draws == 200 and post.draws["alpha"].shape == (200, 2)
  assert post.meta == {"law": "approach2", "tasks": ["gen", "mc4"], "loss_likelihood": "normal"}
  _check_recovery(data, post.median(), "posterior median")
  assert all(np.all(np.isfinite(v)) for v in post.rhat.values())
  np.testing.assert_array_equal(post.rhat["floor"], 1.0)
  assert max(float(np.max(post.rhat[k])) for k in LINK) < 1.2
  summary = post.summary()
  assert summary["num_draws"] == 200 and set(summary["params"]["E"]) == {
      "median", "mean", "lower", "upper", "rhat", "ess"}
  path = str(tmp_path / "post.npz")
  post.save(path)
  loaded = Posterior.load(path)
  assert loaded.meta == post.meta and loaded.num_divergences == post.num_divergences
  for group in ("draws", "rhat", "ess"):
    for k, v in getattr(post, group).items():
      np.testing.assert_array_equal(getattr(loaded, group)[k], v)
  assert loaded.convergence() == post.convergence()
