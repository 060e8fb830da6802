"""The plan stage on a simulated posterior: N bounds, extrapolation factors, per-task optima."""

import ml_collections
import numpy as np
import pytest

from t2jax import fit
from t2jax.fit import config as config_lib
from t2jax.fit import planning
from t2jax.laws import approach2
from t2jax.laws import optimize as opt

TASKS = ["easy", "hard"]
S = 3
# Approach-2 draws [S, T] whose optimum lies far below the fitted sizes (N_min = 1e10).
DRAWS = {key: np.full((S, 2), value) for key, value in dict(
    E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, sigma=0.1, theta2=3.0, theta3=1.0,
    theta4=0.0, floor=0.0, ceil=1.0).items()}
DRAWS["theta1"] = np.array([[8.0, 7.0], [8.1, 7.1], [7.9, 6.9]])
FITTED = dict(N_min=1e10, N_max=2e10, tokens_per_param_min=0.1, tokens_per_param_max=1.0,
              compute_min=1e19, compute_max=1e20)
BUDGETS = (1e20, 1e21)  # inside the fitted compute, then 10x beyond it


def _task_fn(t):
  def fn(p, N, D, k):
    return approach2.expected_passk(p, N, D, k)[t]
  return fn


TASK_FNS = [_task_fn(t) for t in range(len(TASKS))]  # one function object per task: one compile each


def _cfg(**overrides):
  cfg = fit.default_config()
  cfg.update(dict(dict(budgets=BUDGETS, inference_budgets=(1e12,), queries=(1e6,)), **overrides))
  return cfg


@pytest.fixture(scope="module")
def plan():
  return planning.plan_law("approach2", DRAWS, TASKS, _cfg(), None, FITTED)


def test_plan_stays_within_the_fitted_sizes_and_flags_the_bound(plan):
  for e in plan["inference"] + plan["lifecycle"]:
    np.testing.assert_allclose(e["N"]["median"], FITTED["N_min"] / 2, rtol=1e-3)
    assert e["at_n_bound_fraction"] == 1.0 and e["at_grid_edge_fraction"] == 0.0
  for e in plan["inference"]:
    np.testing.assert_allclose(e["training_only"]["N"]["median"], FITTED["N_min"] / 2, rtol=1e-3)
  assert planning.search_grid(_cfg(), FITTED) == opt.SearchGrid(n_min=5e9, n_max=4e10)
  assert planning.search_grid(_cfg(n_range_factor=3.0), FITTED).n_min == pytest.approx(1e10 / 3)
  assert planning.search_grid(_cfg(bound_n=False), FITTED) == opt.SearchGrid()


def test_unbounded_plan_is_the_free_optimum():
  grid = planning.search_grid(_cfg(bound_n=False), FITTED)
  out = opt.frontier(approach2.task_mean_passk, DRAWS, BUDGETS, [1e12], grid)
  assert (out["N"] < FITTED["N_min"] / 10).all() and not out["at_n_bound"].any()


def test_extrapolation_factors(plan):
  inside, beyond = plan["inference"]
  assert 0 < inside["extrapolation"]["tokens_per_param_factor"] <= 1
  assert inside["extrapolation"]["compute_factor"] == pytest.approx(1.0)
  assert beyond["extrapolation"]["tokens_per_param_factor"] > 1
  assert beyond["extrapolation"]["compute_factor"] == pytest.approx(10.0)
  np.testing.assert_allclose(beyond["extrapolation"]["tokens_per_param_factor"],
                             beyond["tokens_per_param"]["median"] / FITTED["tokens_per_param_max"])
  assert beyond["training_only"]["extrapolation"]["compute_factor"] == pytest.approx(10.0)
  for e in plan["lifecycle"]:  # training compute 6N*D* of the lifecycle total
    assert set(e["extrapolation"]) == {"tokens_per_param_factor", "compute_factor"}
    assert e["extrapolation"]["compute_factor"] < e["C"] / FITTED["compute_max"]


def test_per_task_optima_equal_single_task_plans(plan):
  for e in plan["inference"] + plan["lifecycle"]:
    assert list(e["per_task"]) == TASKS
    for t in e["per_task"].values():
      assert {"N", "D", "tokens_per_param", "k", "accuracy", "at_n_bound_fraction"} <= set(t)
  grid = planning.search_grid(_cfg(), FITTED)
  hard, easy = plan["inference"][1]["per_task"]["hard"], plan["inference"][1]["per_task"]["easy"]
  assert hard["accuracy"]["median"] < easy["accuracy"]["median"]
  for t, task in enumerate(TASKS):
    direct = opt.frontier(TASK_FNS[t], DRAWS, BUDGETS, [1e12], grid)
    for b, e in enumerate(plan["inference"]):
      for key in ("N", "k", "accuracy"):
        expected = opt.interval(direct[key][:, 0, b], method="inverted_cdf" if key == "k" else "linear")
        np.testing.assert_allclose([e["per_task"][task][key][q] for q in ("median", "lo", "hi")],
                                   [expected[q] for q in ("median", "lo", "hi")], rtol=1e-9)


def test_fold_tasks():
  folded = planning.fold_tasks(DRAWS)
  assert folded["theta1"].shape == (2 * S, 1)
  np.testing.assert_array_equal(folded["theta1"][:S, 0], DRAWS["theta1"][:, 0])
  np.testing.assert_array_equal(folded["theta1"][S:, 0], DRAWS["theta1"][:, 1])


def test_check_config_validates_the_n_bound_fields():
  with pytest.raises(ValueError, match="n_range_factor"):
    config_lib.check_config(_cfg(n_range_factor=0.5))
  with pytest.raises(ValueError, match="bound_n"):
    config_lib.check_config(ml_collections.ConfigDict(dict(_cfg().to_dict(), bound_n="yes")))
  config_lib.check_config(_cfg(bound_n=False, n_range_factor=1.0))
