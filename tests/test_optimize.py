"""The T2 planner against closed forms and brute-force search."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import gammaln

from t2jax.laws import optimize as opt

CHIN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
T2 = dict(CHIN, G=0.6, gamma=0.35)


def loss(p, N, D):
  return p["E"] + p["A"] / N**p["alpha"] + p["B"] / D**p["beta"]


def chinchilla_law(p, N, D, k):
  del k
  return jnp.exp(-loss(p, N, D))


def approach1_law(p, N, D, k):
  """exp(-L_hat) with L_hat = E + A/N^a + B/D^b + G/k^g, shifted so it is a probability."""
  return jnp.exp(-(loss(p, N, D) - p["E"] + p["G"] / k**p["gamma"]))


def beta_law(p, N, D, k):
  """Approach-2 shape: mu = sigmoid(s (L0 - L)), nu fixed; E[pass@k] = 1 - B(a, b+k)/B(a, b)."""
  mu = 1.0 / (1.0 + jnp.exp(-p["s"] * (p["L0"] - loss(p, N, D))))
  a, b = mu * p["nu"], (1.0 - mu) * p["nu"]
  log_ratio = gammaln(b + k) + gammaln(a + b) - gammaln(a + b + k) - gammaln(b)
  return 1.0 - jnp.exp(log_ratio)


BETA = dict(CHIN, s=3.0, L0=2.6, nu=1.5)


def chinchilla_n_opt(p, C):
  a, b = p["alpha"], p["beta"]
  g = (a * p["A"] / (b * p["B"]))**(1.0 / (a + b))
  return g * (np.asarray(C) / 6.0)**(b / (a + b))


@pytest.mark.parametrize("params", [CHIN, dict(CHIN, alpha=0.5, beta=0.25, A=2e3, B=900.0)])
def test_training_only_k1_is_chinchilla_optimum(params):
  C = np.array([1e15, 1e18, 1e21, 1e24])
  out = opt.training_only_frontier(chinchilla_law, opt.as_draws(params), C)
  np.testing.assert_allclose(out["N"][0], chinchilla_n_opt(params, C), rtol=1e-5)
  np.testing.assert_allclose(out["D"][0], C / (6 * out["N"][0]), rtol=1e-12)
  assert not out["at_grid_edge"].any()


def test_lifecycle_without_queries_is_chinchilla_optimum():
  C = np.array([1e17, 1e20])
  out = opt.lifecycle_frontier(approach1_law, opt.as_draws(T2), C, [0.0], 10.0, 10.0, k_fixed=1)
  np.testing.assert_allclose(out["N"][0, 0], chinchilla_n_opt(T2, C), rtol=1e-5)


C_LIFE, QUERIES, T_PROMPT, T_GEN = 1e21, np.geomspace(1e6, 1e11, 6), 64.0, 16.0


@pytest.fixture(scope="module")
def lifecycle_a1():
  return opt.lifecycle_frontier(approach1_law, opt.as_draws(T2), [C_LIFE], QUERIES, T_PROMPT, T_GEN)


def _check_demand_monotone(out):
  n_Q, r_Q, k_Q = out["N"][0, :, 0], out["tokens_per_param"][0, :, 0], out["k"][0, :, 0]
  assert out["feasible"].all() and not out["at_grid_edge"].any()
  assert np.all(np.diff(n_Q) < 0), n_Q
  assert np.all(np.diff(r_Q) > 0), r_Q
  assert np.all(k_Q >= 1) and np.all(k_Q == np.round(k_Q))
  assert r_Q[-1] > 10 * r_Q[0]


def test_growing_inference_demand_shrinks_model_and_overtrains(lifecycle_a1):
  _check_demand_monotone(lifecycle_a1)
  out = opt.lifecycle_frontier(beta_law, opt.as_draws(BETA), [C_LIFE], QUERIES[:5] * 100, T_PROMPT,
                               T_GEN)
  _check_demand_monotone(out)


def test_lifecycle_matches_brute_force(lifecycle_a1):
  q = QUERIES[2]
  acc, k, n = (lifecycle_a1[key][0, 2, 0] for key in ("accuracy", "k", "N"))
  n_N = np.geomspace(1e7, 1e10, 20_000)[:, None]
  k_K = np.arange(1, 200)[None, :]
  d_NxK = (C_LIFE - q * 2 * n_N * (T_PROMPT + k_K * T_GEN)) / (6 * n_N)
  with jax.enable_x64(True):
    acc_NxK = np.where(d_NxK > 0, approach1_law(T2, n_N, np.maximum(d_NxK, 1.0), k_K), -np.inf)
  assert acc >= acc_NxK.max() - 1e-9
  np.testing.assert_allclose(acc, acc_NxK.max(), rtol=1e-5)
  assert k == k_K[0, np.unravel_index(acc_NxK.argmax(), acc_NxK.shape)[1]]
  d = lifecycle_a1["D"][0, 2, 0]
  np.testing.assert_allclose(6 * n * d + q * 2 * n * (T_PROMPT + k * T_GEN), C_LIFE, rtol=1e-9)


BUDGETS, INFERENCE_BUDGETS = np.array([1e20, 1e21]), np.array([1.0, 4e9])


def test_inference_budget_matches_brute_force_and_infeasible_is_nan():
  out = opt.frontier(beta_law, opt.as_draws(BETA), BUDGETS, INFERENCE_BUDGETS)
  assert not out["feasible"][0, 0].any() and np.isnan(out["N"][0, 0]).all()  # C_inf < 2N for all N
  C, c_inf = BUDGETS[0], INFERENCE_BUDGETS[1]
  n_best, k_best, acc = (out[key][0, 1, 0] for key in ("N", "k", "accuracy"))
  assert k_best >= 1 and k_best == np.round(k_best) and n_best <= c_inf / (2 * k_best) * (1 + 1e-9)
  n_brute = np.geomspace(1e5, c_inf / 2, 200_000)
  k_brute = np.floor(c_inf / (2 * n_brute))
  with jax.enable_x64(True):
    acc_brute = np.asarray(beta_law(BETA, n_brute, C / (6 * n_brute), k_brute))
  assert acc >= acc_brute.max() - 1e-9
  np.testing.assert_allclose(acc, acc_brute.max(), rtol=1e-6)
  np.testing.assert_allclose(n_best, n_brute[acc_brute.argmax()], rtol=1e-3)


def test_draws_are_planned_independently():
  draws = {key: np.array([v, v]) for key, v in BETA.items()}
  draws["L0"] = np.array([2.4, 2.9])
  out = opt.frontier(beta_law, draws, BUDGETS, INFERENCE_BUDGETS)
  for s in range(2):
    one = {key: v[s] for key, v in draws.items()}
    single = opt.frontier(beta_law, opt.as_draws(one), BUDGETS, INFERENCE_BUDGETS)
    for key in opt.PLAN_KEYS:
      np.testing.assert_allclose(out[key][s], single[key][0], rtol=1e-12)


def test_grid_edge_is_flagged():
  grid = opt.SearchGrid(min_tokens_per_param=500.0, max_tokens_per_param=1e4)
  out = opt.training_only_frontier(chinchilla_law, opt.as_draws(CHIN), [1e21], grid=grid)
  assert out["at_grid_edge"].all()


def test_baseline_at_chinchilla_optimum():
  C, c_inf = np.array([1e19, 1e21]), np.array([1e3, 1e10])
  n_1xB = chinchilla_n_opt(CHIN, C)[None]
  out = opt.baseline_at(beta_law, opt.as_draws(BETA), n_1xB, C, c_inf)
  assert (out["k"][0, 0] == 0).all() and (out["accuracy"][0, 0] == 0).all()  # cannot afford a sample
  k = np.floor(1e10 / (2 * n_1xB[0]))
  np.testing.assert_array_equal(out["k"][0, 1], k)
  with jax.enable_x64(True):
    expected = beta_law(BETA, n_1xB[0], C / (6 * n_1xB[0]), k)
  np.testing.assert_allclose(out["accuracy"][0, 1], expected, rtol=1e-12)
  t2 = opt.frontier(beta_law, opt.as_draws(BETA), C, c_inf)
  assert (t2["accuracy"][0, 1] >= out["accuracy"][0, 1]).all()


def test_isoflop_curves():
  C, n_M = 1e20, np.geomspace(1e6, 1e11, 101)
  out = opt.isoflop_curves(beta_law, opt.as_draws(BETA), C, n_M, ks=[1, 10], inference_budgets=[1e9],
                           lifecycle=(1e8, 64.0, 16.0))
  assert out["by_k"].shape == (1, 2, 101) and out["by_inference"].shape == (1, 1, 101)
  i = out["by_k"][0, 0].argmax()
  assert n_M[i - 1] <= chinchilla_n_opt(BETA, C) <= n_M[i + 1]
  assert np.isnan(out["by_inference"][0, 0, n_M > 5e8]).all()
  assert np.isfinite(out["by_inference"][0, 0, n_M <= 5e8]).all()
  plan = opt.lifecycle_frontier(beta_law, opt.as_draws(BETA), [C], [1e8], 64.0, 16.0)
  assert np.nanmax(out["best_k"]) <= plan["accuracy"].item() + 1e-12
  assert np.nanmax(out["best_k"]) >= plan["accuracy"].item() - 1e-3


def test_summarize_interval_and_infeasible_draws():
  x = np.concatenate([np.arange(1.0, 101.0), [np.nan] * 4])
  s = opt.summarize(x)
  np.testing.assert_allclose([s["median"], s["lo"], s["hi"]], np.quantile(np.arange(1.0, 101.0),
                                                                          [0.5, 0.05, 0.95]))
  np.testing.assert_allclose(s["feasible_fraction"], 100 / 104)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="min_tokens_per_param"):
    opt.SearchGrid(min_tokens_per_param=10.0, max_tokens_per_param=1.0)
  with pytest.raises(ValueError, match="leading draw axis"):
    opt.frontier(beta_law, {"E": np.ones(3), "A": np.ones(2)}, [1e20], [1e9])


def test_n_bound_clips_the_search_and_is_flagged():
  C = np.array([1e20, 1e21])
  n_min = 10 * chinchilla_n_opt(CHIN, C).max()  # the optimum lies far below the fitted sizes
  grid = opt.SearchGrid(n_min=n_min / 2, n_max=4 * n_min)
  out = opt.training_only_frontier(chinchilla_law, opt.as_draws(CHIN), C, grid=grid)
  np.testing.assert_allclose(out["N"][0], n_min / 2, rtol=1e-6)
  assert out["at_n_bound"].all() and not out["at_grid_edge"].any()
  far = opt.SearchGrid(n_min=1e13, n_max=1e14)  # above the whole tokens-per-parameter range
  out = opt.training_only_frontier(chinchilla_law, opt.as_draws(CHIN), C, grid=far)
  np.testing.assert_allclose(out["N"][0], 1e13, rtol=1e-9)
  assert out["at_n_bound"].all() and not out["at_grid_edge"].any()
  t2 = opt.frontier(beta_law, opt.as_draws(BETA), C, [1e12], grid)
  assert (t2["N"] >= n_min / 2 * (1 - 1e-9)).all() and t2["at_n_bound"].all()
  assert not t2["at_grid_edge"].any()
  life = opt.lifecycle_frontier(beta_law, opt.as_draws(BETA), C, [1e6], 64.0, 16.0, grid)
  assert (life["N"] >= n_min / 2 * (1 - 1e-9)).all() and life["at_n_bound"].all()
  free = opt.frontier(beta_law, opt.as_draws(BETA), C, [1e12])  # unbounded: far below the bound
  assert (free["N"] < n_min / 10).all() and not free["at_n_bound"].any()


def test_interior_optimum_is_not_at_the_n_bound():
  C = np.array([1e20])
  n_opt = chinchilla_n_opt(CHIN, C)[0]
  grid = opt.SearchGrid(n_min=n_opt / 10, n_max=n_opt * 10)
  out = opt.training_only_frontier(chinchilla_law, opt.as_draws(CHIN), C, grid=grid)
  np.testing.assert_allclose(out["N"][0], n_opt, rtol=1e-5)
  assert not out["at_n_bound"].any() and not out["at_grid_edge"].any()
  with pytest.raises(ValueError, match="n_min < n_max"):
    opt.SearchGrid(n_min=2.0, n_max=1.0)
