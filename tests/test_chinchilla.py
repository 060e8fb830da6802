"""Chinchilla Approach 3: the batched L-BFGS (`optim`), parameter recovery, the closed-form optimum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2jax.laws import chinchilla, optim, simulate

TRUTH = simulate.CHINCHILLA
LADDER = simulate.ladder()  # 12 sizes × 20 ratios = 240 points; one shape, one compile


def _theta(p):
  return np.array([np.log(p["E"]), np.log(p["A"]), np.log(p["B"]), p["alpha"], p["beta"]])


def _objective(params, N, D, loss):
  logx = np.log(np.stack([N, D], axis=1))
  with jax.enable_x64(True):
    return float(optim.power_sum_objective(jnp.asarray(_theta(params)), jnp.asarray(logx),
                                           jnp.log(jnp.asarray(loss)), 1e-3))


def test_import_leaves_x64_off():
  assert not jax.config.jax_enable_x64
  assert jnp.zeros(1).dtype == jnp.float32


def test_lbfgs_minimises_rosenbrock_batched():
  rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
  with jax.enable_x64(True):
    starts = jnp.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0]])
    x, f, _ = jax.jit(jax.vmap(lambda s: optim.lbfgs(rosen, s, max_iter=500)))(starts)
  np.testing.assert_allclose(np.asarray(x), 1.0, atol=1e-5)
  assert np.all(np.asarray(f) < 1e-10)


def test_fit_recovers_noise_free_truth_exactly():
  N, D = LADDER
  fit = chinchilla.fit(N, D, simulate.chinchilla_losses(N, D, noise=0.0))
  assert fit.num_starts == 4500 and fit.num_near_best >= 1
  for name in ("E", "A", "B", "alpha", "beta"):
    np.testing.assert_allclose(fit.params[name], TRUTH[name], rtol=1e-4, err_msg=name)


def test_fit_recovers_truth_from_noisy_ladder():
  """1% log-normal noise on 240 points. Tolerances (over seeds 0-3 the errors were at most
  α 0.02, β 0.003, E 4%, N_opt 13%): α, β within 0.03, E within 5%, N_opt(1e21) within 15%;
  and the fit is at least as good as the truth on the Huber objective (a true minimiser)."""
  N, D = LADDER
  loss = simulate.chinchilla_losses(N, D, noise=0.01, seed=0)
  fit = chinchilla.fit(N, D, loss)
  p = fit.params
  assert abs(p["alpha"] - TRUTH["alpha"]) < 0.03
  assert abs(p["beta"] - TRUTH["beta"]) < 0.03
  assert abs(p["E"] / TRUTH["E"] - 1) < 0.05
  N_opt, _ = chinchilla.optimum(p, 1e21)
  N_true, _ = chinchilla.optimum(TRUTH, 1e21)
  assert abs(float(N_opt / N_true) - 1) < 0.15
  assert fit.objective <= _objective(TRUTH, N, D, loss) * (1 + 1e-9)


def test_optimum_is_the_argmin_of_loss_at_fixed_compute():
  with jax.enable_x64(True):
    for C in (1e19, 1e21, 1e23):
      N_grid = np.geomspace(1e6, 1e13, 200_001)
      loss = np.asarray(chinchilla.loss(TRUTH, N_grid, C / (6 * N_grid)))
      N_opt, D_opt = chinchilla.optimum(TRUTH, C)
      np.testing.assert_allclose(float(N_opt), N_grid[np.argmin(loss)], rtol=2e-4)
      np.testing.assert_allclose(6 * float(N_opt) * float(D_opt), C, rtol=1e-12)


def test_loss_and_optimum_broadcast_over_parameter_draws():
  draws = {k: np.full((4,), v) * np.linspace(0.95, 1.05, 4) for k, v in TRUTH.items()}
  assert chinchilla.loss(draws, np.ones((3, 1)) * 1e8, np.ones(5) * 1e10).shape == (4, 3, 5)
  N_opt, D_opt = chinchilla.optimum(draws, np.array([1e20, 1e21]))
  assert N_opt.shape == D_opt.shape == (4, 2)
  assert np.all(np.diff(np.asarray(N_opt), axis=1) > 0)


def test_fit_rejects_bad_input():
  with pytest.raises(ValueError, match="`loss` must be finite and > 0"):
    chinchilla.fit(np.array([1e6, 1e7]), np.array([1e8, 1e9]), np.array([3.0, np.nan]))
  with pytest.raises(ValueError, match="1-D arrays of one length"):
    chinchilla.fit(np.array([1e6, 1e7]), np.array([1e8]), np.array([3.0, 2.0]))


def test_map_fit_starts_from_a_point_fit_that_diverged():
  """Six `cpu` ladder rungs (3 sizes × D/N 10-40), a backtest fold: the Huber point fit there sent
  A and α to infinity; the MAP must start from the prior instead and end finite."""
  N = np.array([39504.0, 39504, 39504, 63096, 63096, 92320])
  D = N * np.array([10.0575, 20.0113, 40.0227, 10.0621, 20.0593, 10.0270])
  loss = np.array([6.26308, 5.76687, 5.40740, 5.76705, 5.34826, 5.52462])
  logx, theta = np.log(np.stack([N, D], axis=1)), np.array([np.log(4.24), np.inf, np.log(591.0),
                                                            67.3, 0.446])
  params, sd = optim.map_power_sum(logx, loss, theta, chinchilla._derive,  # pylint: disable=protected-access
                                   query_logx=np.log([[1.54e5, 1.54e5 * 40], [3.95e4, 3.95e4 * 200]]))
  assert all(np.isfinite(v) for v in params.values()) and np.all(np.isfinite(sd)) and np.all(sd > 0)
  assert 0.01 < params["alpha"] < 1.95 and params["E"] < loss.min()
  fitted = np.asarray(chinchilla.loss(params, N, D))
  assert np.max(np.abs(np.log(fitted / loss))) < 0.02
