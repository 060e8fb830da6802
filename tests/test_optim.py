"""Shared fitting machinery: padded power-sum fits, jitted MAP searches, the Laplace sd."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

from t2jax.laws import approach2, chinchilla, optim, simulate, table

GRID = {"e": (0.0, 0.5), "log_A": (5.0, 10.0), "log_B": (5.0, 10.0), "alpha": (0.3, 0.6),
        "beta": (0.3, 0.6)}  # 32 starts: enough for these clean ladders


def _normal_mean(y_R, prior_sd):
  mu = numpyro.sample("mu", dist.Normal(0.0, prior_sd))
  numpyro.sample("y", dist.Normal(mu, 1.0), obs=y_R)


def _affine(z, model_kwargs, scale):
  return scale * z["mu"] + 1.0


def test_laplace_sd_is_exact_for_a_conjugate_normal_mean():
  """y ~ N(μ, 1), μ ~ N(0, 10²): the posterior is normal with sd 1/√(R + 1/100); the sd of an
  affine prediction c·μ + 1 is |c| times it (the Laplace approximation and delta method exact)."""
  y = np.random.default_rng(0).normal(0.3, 1.0, 25)
  sites = optim.map_sites(_normal_mean, {"mu": 0.0}, max_iter=200, y_R=y, prior_sd=10.0)
  np.testing.assert_allclose(sites["mu"], y.sum() / (25 + 0.01), rtol=1e-8)
  sd = optim.laplace_sd(_normal_mean, sites, _affine, {"scale": np.array([2.0, -3.0])}, y_R=y,
                        prior_sd=10.0)
  np.testing.assert_allclose(sd, np.array([2.0, 3.0]) / np.sqrt(25 + 0.01), rtol=1e-8)


def test_map_search_takes_new_data_without_a_new_compilation():
  """The data are arguments of the jitted search: new values of one shape reuse its program."""
  search = optim._map_search(_normal_mean, 200, ())
  before = search._cache_size()
  for y in (np.zeros(7), np.ones(7)):
    optim.map_sites(_normal_mean, {"mu": 0.0}, max_iter=200, y_R=y, prior_sd=10.0)
  assert search._cache_size() == before + 1


def test_padded_rows_leave_the_power_sum_fit_unchanged():
  N, D = simulate.ladder(num_sizes=4, num_ratios=3)
  loss = np.asarray(chinchilla.loss(simulate.CHINCHILLA, N, D))
  loss = loss * np.exp(np.random.default_rng(1).normal(0, 0.01, loss.shape))
  plain = chinchilla.fit(N, D, loss, grid=GRID).params
  padded = chinchilla.fit(N, D, loss, grid=GRID, pad_to=100).params  # 12 rows padded to 128
  for key in plain:
    np.testing.assert_allclose(padded[key], plain[key], rtol=1e-5)


def test_padded_approach2_data_has_the_same_log_posterior():
  N, D = simulate.ladder(num_sizes=3, num_ratios=3)
  rows = simulate.approach2_rows(N, D, num_questions=30, n=8, seed=0)
  results = table.results_from_rows(sorted(rows[0]), rows, "simulated")
  floors = {name: p["floor"] for name, p in simulate.APPROACH2_TASKS.items()}
  for likelihood in ("gammaln", "rising"):
    data = approach2.prepare(results, floors=floors, likelihood=likelihood)
    padded = approach2.pad(data, sizes=(40, 300))
    assert len(padded.task_G) == 64 and len(padded.group_K) == 512
    z = {k: np.random.default_rng(1).normal(0, 0.5, 2) for k in approach2.SITES}
    with jax.enable_x64(True):
      density = lambda d: float(numpyro.infer.util.log_density(approach2.model, (), {"data": d},
                                                               z)[0])
      np.testing.assert_allclose(density(padded), density(data), rtol=1e-12)
