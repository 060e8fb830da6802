"""ArviZ diagnostics: r-hat/ESS on chains with known answers, netCDF, pointwise log-likelihoods
(sum = the model's log-likelihood), PSIS-LOO and the Normal/Student-t choice, trace/rank plots."""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from numpyro import handlers
from numpyro.infer import util as infer_util
from scipy import stats

from t2jax.fit import fitting
from t2jax.laws import (approach1, approach2, chinchilla, diagnostics, optim, pointwise, simulate,
                        table)
from t2jax.laws.posterior import Posterior


def _ar1(rho, C, S, seed):
  """C chains of a stationary AR(1) with unit marginal variance: ESS = C·S·(1 − ρ)/(1 + ρ)."""
  rng = np.random.default_rng(seed)
  x = np.empty((C, S))
  x[:, 0] = rng.standard_normal(C)
  for s in range(1, S):
    x[:, s] = rho * x[:, s - 1] + np.sqrt(1 - rho ** 2) * rng.standard_normal(C)
  return x


def test_rhat_ess_known_answers():
  rng = np.random.default_rng(0)
  iid_CxSx3 = rng.standard_normal((4, 1000, 3))
  rhat, ess = diagnostics.rhat_ess(iid_CxSx3)
  assert rhat.shape == ess.shape == (3,)
  assert np.all(np.abs(rhat - 1) < 0.01) and np.all((ess > 3000) & (ess < 5000))
  shifted = iid_CxSx3 + 3.0 * np.arange(4)[:, None, None]  # chains stuck apart
  assert np.all(diagnostics.rhat_ess(shifted)[0] > 2)
  rhat, ess = diagnostics.rhat_ess(_ar1(0.8, 4, 2000, seed=1))
  assert abs(rhat - 1) < 0.02 and 0.7 < ess / (8000 / 9) < 1.3
  drift = rng.standard_normal((1, 1000)) + np.linspace(0, 4, 1000)  # one chain, drifting
  assert diagnostics.rhat_ess(drift)[0] > 1.5
  assert abs(diagnostics.rhat_ess(rng.standard_normal((1, 1000)))[0] - 1) < 0.02
  constant = np.stack([rng.standard_normal((2, 50)), np.full((2, 50), 0.25)], axis=-1)
  rhat, ess = diagnostics.rhat_ess(constant)
  assert rhat[1] == 1.0 and ess[1] == 100.0 and np.isfinite(rhat[0])


def test_rhat_ess_agree_with_the_previous_numpyro_diagnostics():
  """On fixed chains (AR(1), ρ = 0.5; and two chains 0.3 sd apart), ArviZ's rank-normalised
  split r-hat and min(bulk, tail) ESS agree with numpyro's split r-hat and ESS, which the
  convergence check used before: r-hat within 0.01, ESS within 25% (different estimators of the
  same quantity; the AR(1) chains' true ESS is 2000·(1 − ρ)/(1 + ρ) = 667)."""
  from numpyro import diagnostics as numpyro_diagnostics
  for x in (_ar1(0.5, 2, 1000, seed=3), _ar1(0.5, 2, 1000, seed=4) + np.array([[0.0], [0.3]])):
    rhat, ess = diagnostics.rhat_ess(x)
    old_rhat = float(numpyro_diagnostics.split_gelman_rubin(x))
    old_ess = float(numpyro_diagnostics.effective_sample_size(x))
    assert abs(rhat - old_rhat) < 0.01, (rhat, old_rhat)
    assert 0.75 < ess / old_ess < 1.33, (ess, old_ess)


def test_posterior_convergence_uses_arviz():
  rng = np.random.default_rng(0)
  chains = {"a": rng.standard_normal((2, 400)), "b": rng.standard_normal((2, 400, 2)),
            "floor": np.zeros((2, 400))}
  post = Posterior.from_chains(chains, 0, {"law": "test"})
  checks = post.convergence()
  assert set(checks) == {"rhat_max", "ess_min", "rhat", "ess", "num_divergences", "num_draws",
                         "num_chains", "converged", "problems"}
  assert checks["converged"] and set(checks["rhat"]) == {"a", "b"}
  assert checks["rhat"]["b"] == float(np.max(diagnostics.rhat_ess(chains["b"])[0]))
  chains["a"] = chains["a"] + np.array([[0.0], [2.0]])
  bad = Posterior.from_chains(chains, 9, {"law": "test"}).convergence(rhat_max=1.05)
  assert not bad["converged"] and bad["problems"][0].startswith("r-hat of a is")
  assert "9 divergent transitions" in bad["problems"][1]


def _a2_posterior(data, S=6, seed=0):
  """Draws (2 chains × S/2) around the simulator's truth, as sites and as a Posterior."""
  truth = {k: np.array([simulate.APPROACH2_TASKS[t][k] for t in data.tasks])
           for k in approach2.PARAMS if k != "sigma"}
  truth["sigma"] = np.full(len(data.tasks), 0.03)
  base = approach2.from_params(truth, data)
  rng = np.random.default_rng(seed)
  z = {k: v + 0.1 * rng.standard_normal((S,) + v.shape) for k, v in base.items()}
  with jax.enable_x64(True):
    params = {k: np.asarray(v) for k, v in approach2.to_params(
        {k: jnp.asarray(v) for k, v in z.items()}, data).items()}
  post = Posterior.from_chains({k: v.reshape((2, S // 2) + v.shape[1:]) for k, v in params.items()},
                               0, {"law": "approach2", "tasks": list(data.tasks)})
  return z, post


def _a2_data(form, loss_likelihood):
  N, D = simulate.ladder(num_sizes=3, num_ratios=2)
  rows = simulate.approach2_rows(N, D, num_questions=30, n=6, seed=0)
  for row in rows[::5]:
    row["n"] = row["c"] = None
  results = table.results_from_rows(sorted(rows[0]), rows, "simulated")
  return approach2.prepare(results, floors={t: p["floor"] for t, p in
                                            simulate.APPROACH2_TASKS.items()},
                           likelihood=form, loss_likelihood=loss_likelihood)


@pytest.mark.parametrize("form,loss_likelihood", [("gammaln", "normal"), ("rising", "student_t")])
def test_approach2_pointwise_sums_to_the_model_log_likelihood(form, loss_likelihood):
  data = _a2_data(form, loss_likelihood)
  assert (data.above_c_GxJ is None) == (form == "gammaln")
  z, post = _a2_posterior(data)
  ll_SxG = pointwise.approach2_groups(post, data)
  assert ll_SxG.shape == (6, len(data.task_G))
  with jax.enable_x64(True):
    for s in range(3):
      z_s = {k: jnp.asarray(v[s]) for k, v in z.items()}
      tr = handlers.trace(handlers.substitute(approach2.model, data=z_s)).get_trace(data)
      want = float(tr["loss_ll"]["fn"].log_factor + tr["accuracy_ll"]["fn"].log_factor)
      np.testing.assert_allclose(ll_SxG[s].sum(), want, rtol=0, atol=1e-9)


def _power_sum_truth_post(meta, params, logx_RxF, logy_R, S=6, seed=0):
  """Random sites of `optim.power_sum_model` and the Posterior of the params they map to."""
  F = logx_RxF.shape[1]
  rng = np.random.default_rng(seed)
  center_F = logx_RxF.mean(0)
  names = [("A", "alpha"), ("B", "beta"), ("G", "gamma")][:F]
  s_F = np.array([params[s] for _, s in names])
  amp_F = np.log([params[c] for c, _ in names]) - s_F * center_F
  logit_E = optim.logit(params["E"] / np.exp(logy_R.min()))
  sites = {"logit_E": logit_E + 0.1 * rng.standard_normal(S),
           "amp": amp_F + 0.1 * rng.standard_normal((S, F)),
           "logit_s": optim.logit(s_F / 2) + 0.1 * rng.standard_normal((S, F)),
           "log_sigma": np.log(0.02) + 0.3 * rng.standard_normal(S)}
  E = np.exp(logy_R.min()) * stats.logistic.cdf(sites["logit_E"])
  s_SxF = 2 * stats.logistic.cdf(sites["logit_s"])
  draws = dict(E=E, sigma=np.exp(sites["log_sigma"]))
  for f, (c, s) in enumerate(names):
    draws[c], draws[s] = np.exp(sites["amp"][:, f] + s_SxF[:, f] * center_F[f]), s_SxF[:, f]
  return sites, Posterior.from_chains({k: v.reshape(2, S // 2) for k, v in draws.items()}, 0, meta)


@pytest.mark.parametrize("law,likelihood", [("chinchilla", "normal"), ("approach1", "student_t")])
def test_power_sum_pointwise_is_log_density_minus_priors(law, likelihood):
  N, D = simulate.ladder(num_sizes=3, num_ratios=3)
  if law == "chinchilla":
    xs, loss = (N, D), simulate.chinchilla_losses(N, D, seed=0)
    truth = simulate.CHINCHILLA
  else:
    N, D, k, loss = simulate.approach1_table(N, D, [1.0, 4.0], seed=0)
    xs, truth = (N, D, k), simulate.APPROACH1
  logx_RxF, logy_R = np.log(np.stack(xs, axis=1)), np.log(loss)
  meta = {"law": law, "likelihood": likelihood}
  sites, post = _power_sum_truth_post(meta, truth, logx_RxF, logy_R)
  ll_SxR = getattr(pointwise, law)(post, *xs, loss)
  assert ll_SxR.shape == (6, len(loss))
  kwargs = dict(logx_RxF=logx_RxF, logy_R=logy_R, center_F=logx_RxF.mean(0), likelihood=likelihood)
  with jax.enable_x64(True):
    for s in range(3):
      z = {k: jnp.asarray(v[s]) for k, v in sites.items()}
      tr = handlers.trace(handlers.substitute(optim.power_sum_model, data=z)).get_trace(**kwargs)
      prior = sum(float(jnp.sum(tr[k]["fn"].log_prob(z[k]))) for k in z)
      total = float(infer_util.log_density(optim.power_sum_model, (), kwargs, z)[0])
      np.testing.assert_allclose(ll_SxR[s].sum(), total - prior, rtol=0, atol=1e-9)


def test_student_t_observation_and_option_validation():
  y, loc, scale = np.array([0.1, -0.3, 2.0]), 0.05, 0.2
  with jax.enable_x64(True):
    got = np.asarray(optim.observation("student_t", loc, scale).log_prob(y))
  np.testing.assert_allclose(got, stats.t.logpdf(y, optim.STUDENT_T_DF, loc, scale), rtol=1e-12)
  with pytest.raises(ValueError, match="loss_likelihood='cauchy'"):
    _a2_data("auto", "cauchy")
  with pytest.raises(ValueError, match="likelihood='t'"):
    chinchilla.sample_posterior([1e6, 2e6], [1e9, 2e9], [3.0, 2.9], likelihood="t")
  with pytest.raises(ValueError, match="likelihood='t'"):
    approach1.sample_posterior([1e6], [1e9], [1.0], [3.0], likelihood="t")


OUTLIERS = [7, 13]


@pytest.fixture(scope="module")
def outlier_ladder():
  """Chinchilla posteriors (2 chains × 100 draws) under both likelihoods, on a 20-rung ladder whose
  rungs 7 and 13 (10%) have 30% and 25% too high losses (diverged or badly tuned runs)."""
  N, D = simulate.ladder(num_sizes=5, num_ratios=4)
  loss = simulate.chinchilla_losses(N, D, noise=0.01, seed=0)
  loss[OUTLIERS] *= np.array([1.3, 1.25])
  point = optim.LawFit(dict(simulate.CHINCHILLA), 0.0, 1, 1)
  posts = {lik: chinchilla.sample_posterior(N, D, loss, num_chains=2, num_warmup=100,
                                            num_samples=100, seed=0, point=point, likelihood=lik)
           for lik in optim.LIKELIHOODS}
  return N, D, loss, posts


def test_student_t_is_chosen_by_loo_on_an_outlier_ladder(outlier_ladder):
  N, D, loss, posts = outlier_ladder
  assert {lik: p.meta["likelihood"] for lik, p in posts.items()} == {
      "normal": "normal", "student_t": "student_t"}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ArviZ warns about the Normal model's high Pareto k
    res = {lik: diagnostics.loo(p, pointwise.chinchilla(p, N, D, loss)) for lik, p in posts.items()}
  for r in res.values():
    assert set(r) == {"elpd_loo", "se", "p_loo", "pareto_k_max", "num_bad_k", "good_k", "elpd_i"}
    assert r["elpd_i"].shape == (20,) and np.isclose(r["elpd_i"].sum(), r["elpd_loo"])
  assert set(np.argsort(res["normal"]["elpd_i"])[:2]) == set(OUTLIERS)
  assert res["normal"]["pareto_k_max"] > 0.7
  choice = diagnostics.choose_likelihood(res["normal"], res["student_t"])
  # two rows carry the paired se (elpd gain ~1.5 se): the Normal's bad Pareto k decide
  assert choice["likelihood"] == "student_t" and choice["elpd_diff"] > 0, choice
  assert res["normal"]["num_bad_k"] > res["student_t"]["num_bad_k"]
  # the fit stage's pooled summary (`fitting._loo`) carries what the choice needs
  pooled = {lik: fitting._loo({"chinchilla": p}, {"chinchilla": pointwise.chinchilla(p, N, D, loss)})
            for lik, p in posts.items()}
  assert diagnostics.choose_likelihood(pooled["normal"], pooled["student_t"]) == choice
  # the robust fit is not dragged by the outlier: its E is within 10% of the truth, nearer than
  # the Normal fit's
  E = simulate.CHINCHILLA["E"]
  err = {lik: abs(np.median(p.draws["E"]) / E - 1) for lik, p in posts.items()}
  assert err["student_t"] < 0.1 and err["student_t"] < err["normal"]
  # an elpd gain inside 2 standard errors with equally reliable estimates keeps the Normal; one
  # beyond 2 se picks the Student-t
  noisy = dict(res["student_t"], elpd_i=res["normal"]["elpd_i"] + np.tile([0.3, -0.2], 10),
               num_bad_k=res["normal"]["num_bad_k"])
  assert diagnostics.choose_likelihood(res["normal"], noisy)["likelihood"] == "normal"
  clear = dict(noisy, elpd_i=res["normal"]["elpd_i"] + np.tile([0.3, 0.2], 10))
  assert diagnostics.choose_likelihood(res["normal"], clear)["likelihood"] == "student_t"
  with pytest.raises(ValueError, match="same R"):
    diagnostics.choose_likelihood(res["normal"], dict(noisy, elpd_i=noisy["elpd_i"][:5]))
  with pytest.raises(ValueError, match="meta\\['law'\\]"):
    pointwise.approach1(posts["normal"], N, D, np.ones_like(N), loss)


def test_netcdf_round_trip_and_loo_on_approach2(tmp_path):
  data = _a2_data("auto", "normal")
  _, post = _a2_posterior(data, S=40)
  ll_SxG = pointwise.approach2_groups(post, data)
  path = str(tmp_path / "fit" / "approach2.nc")
  diagnostics.save_netcdf(post, path, ll_SxG)
  assert os.listdir(tmp_path / "fit") == ["approach2.nc"]  # no temp file left
  tree = xr.open_datatree(path, engine="h5netcdf")
  assert list(tree["posterior"]["task"].values) == list(data.tasks)
  alpha = tree["posterior"]["alpha"]
  assert alpha.dims == ("chain", "draw", "task")
  np.testing.assert_array_equal(alpha.values.reshape(40, -1), post.draws["alpha"])
  np.testing.assert_array_equal(tree["log_likelihood"]["obs"].values.reshape(40, -1), ll_SxG)
  assert tree.attrs["num_chains"] == 2 and '"law": "approach2"' in tree.attrs["meta"]
  tree.close()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    res = diagnostics.loo(post, ll_SxG)  # constant floor/ceil draws do not break r_eff
  assert np.isfinite(res["elpd_loo"]) and res["elpd_loo"] <= ll_SxG.mean(0).sum() + 1e-9
  with pytest.raises(ValueError, match="draws, observations"):
    diagnostics.to_arviz(post, ll_SxG[:10])


def test_trace_rank_figure(tmp_path):
  rng = np.random.default_rng(0)
  post = Posterior.from_chains({"a": rng.standard_normal((2, 100)),
                                "b": rng.standard_normal((2, 100, 2)),
                                "floor": np.zeros((2, 100))}, 0, {"tasks": ["x", "y"]})
  path = str(tmp_path / "trace.png")
  assert diagnostics.trace_rank_figure(post, path) == path
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.listdir(tmp_path) == ["trace.png"]
  with pytest.raises(ValueError, match="pick from"):
    diagnostics.trace_rank_figure(post, path, sites=["nope"])
