"""The fit stage: point fits and NUTS posteriors of every law the tables support → `out_dir/fit/`.

`fit_tables` validates the tables (nothing is written when they are bad), fits Chinchilla on the
losses and Approach 1 and Approach 2 on the per-question results (held-out rows left out), checks
every posterior's convergence (`Posterior.convergence`; refits with longer chains, then refuses
unconverged ones unless `allow_unconverged`), backtests every law inside the fitting set to
calibrate its model discrepancy (`backtest`, with `discrepancy="backtest"`), and scores the
held-out rows with posterior predictive intervals (`scoring`). Writes fit/summary.json
(`discrepancy`: each law's scale), fit/backtest.json, fit/diagnostics.json,
fit/extrapolation.json and fit/posteriors/*.npz.
"""

import os
import time
from typing import Callable, Optional

import numpy as np

from t2jax import io
from t2jax.fit import config as config_lib
from t2jax.fit import inputs as inputs_lib
from t2jax.fit import backtest, scoring
from t2jax.laws import approach1, approach2, chinchilla, diagnostics, optim, optimize, pointwise
from t2jax.laws import posterior as posterior_lib


class UnconvergedError(ValueError):
  """NUTS chains failed the convergence checks and `allow_unconverged` is off."""


def _param_summary(post: posterior_lib.Posterior) -> dict:
  return {name: optimize.interval(v) for name, v in post.draws.items()}


def _nuts(cfg, scale: int = 1) -> dict:
  return dict(num_chains=int(cfg.num_chains), num_warmup=scale * int(cfg.num_warmup),
              num_samples=scale * int(cfg.num_samples), seed=int(cfg.seed))


# Each `_fit_*` runs the point fit once and returns (point summary, sample, pointwise):
# `sample(scale, likelihood)` draws the posteriors with `scale` times the configured warm-up and
# draws under the loss likelihood ("normal" or "student_t"), and `pointwise(name, post)` gives a
# posterior's pointwise log-likelihood (S, R) of the rows it was fitted on (PSIS-LOO).

def _fit_chinchilla(losses, cfg):
  rows = losses.fit_rows()
  point = chinchilla.fit(rows.N, rows.D, rows.loss)
  return ({"params": point.params, "objective": point.objective,
           "num_near_best_starts": point.num_near_best},
          lambda scale, likelihood: {"chinchilla": chinchilla.sample_posterior(
              rows.N, rows.D, rows.loss, point=point, likelihood=likelihood, **_nuts(cfg, scale))},
          lambda name, post: pointwise.chinchilla(post, rows.N, rows.D, rows.loss))


def _fit_approach1(results, cfg):
  tables = approach1.table_from_results(results, k_grid=config_lib.k_grid(cfg),
                                        source=cfg.accuracy)
  point, fits = {}, {}
  for task, t in tables.items():
    num_k = len(np.unique(t.k))
    config_lib.log(f"approach1 [{task}]: {len(t.k) // num_k} models × {num_k} k (targets from "
                   f"{cfg.accuracy})")
    if t.censored:
      config_lib.log(f"approach1 [{task}]: {len(t.censored)} models censored (their samples do "
                     f"not identify T(k)), left out: {t.censored}")
    fits[task] = approach1.fit(t.N, t.D, t.k, t.loss)
    point[task] = {"params": fits[task].params, "objective": fits[task].objective,
                   "k_grid": np.unique(t.k), "num_near_best_starts": fits[task].num_near_best,
                   "censored": t.censored}

  def sample(scale, likelihood):
    return {f"approach1/{task}": approach1.sample_posterior(
        t.N, t.D, t.k, t.loss, point=fits[task], likelihood=likelihood,
        **dict(_nuts(cfg, scale), seed=int(cfg.seed) + 1 + i))
            for i, (task, t) in enumerate(tables.items())}

  def ll(name, post):
    t = tables[name.split("/", 1)[1]]
    return pointwise.approach1(post, t.N, t.D, t.k, t.loss)

  return point, sample, ll


def _fit_approach2(results, floors, cfg):
  data = {lik: approach2.prepare(results, floors=floors, loss_likelihood=lik)
          for lik in optim.LIKELIHOODS}
  mle = approach2.fit_mle(data["normal"])
  point = {"tasks": list(data["normal"].tasks), "floors": dict(zip(data["normal"].tasks,
                                                                   data["normal"].floor_T)),
           "params": {name: dict(zip(data["normal"].tasks, v.tolist())) for name, v in mle.items()}}
  return (point, lambda scale, likelihood: {"approach2": approach2.sample_posterior(
      data[likelihood], mle=mle, **dict(_nuts(cfg, scale), seed=int(cfg.seed) + 100))},
          lambda name, post: pointwise.approach2_groups(post, data[post.meta["loss_likelihood"]]))


def _loo(posts: dict, loglik: dict) -> dict:
  """PSIS-LOO of a law's posteriors from their pointwise log-likelihoods (by posterior name;
  Approach 1: its tasks' observations pooled)."""
  parts = {name: diagnostics.loo(post, loglik[name]) for name, post in posts.items()}
  elpd_i = np.concatenate([p["elpd_i"] for p in parts.values()])
  return {"elpd_loo": float(sum(p["elpd_loo"] for p in parts.values())),
          "se": float(np.sqrt(len(elpd_i)) * np.std(elpd_i, ddof=1)) if len(elpd_i) > 1 else 0.0,
          "p_loo": float(sum(p["p_loo"] for p in parts.values())),
          "pareto_k_max": max(p["pareto_k_max"] for p in parts.values()),
          "num_bad_k": sum(p["num_bad_k"] for p in parts.values()),
          "good_k": min(p["good_k"] for p in parts.values()), "elpd_i": elpd_i}


def _fit_law(law: str, sample, pointwise_fn, cfg) -> tuple:
  """Samples a law under the configured likelihood(s); with `likelihood="auto"` under both and
  keeps the one PSIS-LOO prefers (`diagnostics.choose_likelihood`; an unconverged candidate is
  not chosen). Returns (posteriors, diagnostics, loo summary, pointwise log-likelihoods)."""
  options = optim.LIKELIHOODS if cfg.likelihood == "auto" else (cfg.likelihood,)
  runs = {}
  for lik in options:
    if len(options) > 1:
      config_lib.log(f"{law}: {lik} likelihood")
    posts, checks, _ = sample_until_converged(lambda scale: sample(scale, lik),
                                              retries=int(cfg.retries), rhat_max=cfg.rhat_max,
                                              log=config_lib.log)
    loglik = {name: pointwise_fn(name, post) for name, post in posts.items()}
    runs[lik] = (posts, checks, _loo(posts, loglik), loglik)
  converged = {lik: all(d["converged"] for d in r[1].values()) for lik, r in runs.items()}
  if len(options) == 1:
    chosen, why = options[0], {"likelihood": options[0], "reason": "configured"}
  elif converged["student_t"] and converged["normal"]:
    why = diagnostics.choose_likelihood(runs["normal"][2], runs["student_t"][2])
    chosen = why["likelihood"]
  else:
    chosen = "normal" if converged["normal"] or not converged["student_t"] else "student_t"
    why = {"likelihood": chosen, "reason": "the other likelihood's chains did not converge"}
  config_lib.log(f"{law}: {chosen} likelihood ({why['reason']})")
  summary = {"chosen": why, **{lik: {k: v for k, v in r[2].items() if k != "elpd_i"}
                               for lik, r in runs.items()}}
  return runs[chosen][0], runs[chosen][1], summary, runs[chosen][3]


def sample_until_converged(sample: Callable[[int], dict], *, retries: int, rhat_max: float,
                           log: Callable[[str], None] = lambda msg: None) -> tuple:
  """Runs `sample(scale)` (posteriors by name, NUTS with `scale` times the configured warm-up and
  draws) and, while any posterior fails the convergence checks, again with twice the scale, up to
  `retries` times. Returns (posteriors, their `Posterior.convergence` diagnostics, attempts made)."""
  for attempt in range(retries + 1):
    posts = sample(2 ** attempt)
    checks = {name: post.convergence(rhat_max) for name, post in posts.items()}
    for name, d in checks.items():
      log(f"{name}: max r-hat {d['rhat_max']:.3f}, min ESS {d['ess_min']:.0f}, "
          f"{d['num_divergences']} divergences{'' if d['converged'] else ' — NOT CONVERGED'}")
    if all(d["converged"] for d in checks.values()):
      break
    if attempt < retries:
      failed = ", ".join(name for name, d in checks.items() if not d["converged"])
      log(f"{failed}: refitting with twice the warm-up and draws (retry {attempt + 1} of {retries})")
  return posts, checks, attempt + 1


def posterior_path(out_dir: str, name: str) -> str:
  """Where posterior `name` (e.g. "approach1/gen") is saved under `out_dir/fit/posteriors/`."""
  return os.path.join(out_dir, "fit", "posteriors", name.replace("/", "__") + ".npz")


def fit_tables(results_path: str, rungs_path: Optional[str], out_dir: str, cfg) -> dict:
  """Fits every law the tables support; writes `out_dir/fit/` and returns its summary."""
  inputs = inputs_lib.load_inputs(results_path, rungs_path, cfg)
  start = time.time()
  for law, why in inputs.skipped.items():
    config_lib.log(f"{law}: skipped ({why})")
  point, posts = {}, {}
  fit_results = (inputs.results.select(~inputs.results_heldout)
                 if inputs.results is not None else None)
  fitters = {"chinchilla": lambda: _fit_chinchilla(inputs.losses, cfg),
             "approach1": lambda: _fit_approach1(fit_results, cfg),
             "approach2": lambda: _fit_approach2(fit_results, inputs.floors, cfg)}
  convergence, loo, loglik = {}, {}, {}
  for law in inputs.laws:
    t0 = time.time()
    config_lib.log(f"{law}: point fit + NUTS ({cfg.num_chains} chains × {cfg.num_warmup} warm-up + "
                   f"{cfg.num_samples} draws)")
    point[law], sample, pointwise_fn = fitters[law]()
    new, checks, loo[law], new_loglik = _fit_law(law, sample, pointwise_fn, cfg)
    posts.update(new)
    loglik.update(new_loglik)
    convergence.update(checks)
    config_lib.log(f"{law}: done in {time.time() - t0:.0f}s")
  unconverged = {name: d["problems"] for name, d in convergence.items() if not d["converged"]}
  fit_dir = os.path.join(out_dir, "fit")
  if unconverged and not cfg.allow_unconverged:
    io.write_json(os.path.join(fit_dir, "diagnostics.json"), convergence)
    raise UnconvergedError(
        f"the NUTS chains did not converge, so no posterior is reported: {unconverged}. Run longer "
        "chains (--config.num_warmup / --config.num_samples), or pass --config.allow_unconverged=True "
        f"to keep them anyway (diagnostics in {fit_dir}/diagnostics.json)")
  for name, post in posts.items():
    post.save(posterior_path(out_dir, name))
    diagnostics.save_netcdf(post, posterior_path(out_dir, name)[:-len(".npz")] + ".nc",
                            loglik[name])
  scales = {}
  if cfg.discrepancy == "backtest":
    t0 = time.time()
    backtests = backtest.run_backtests(inputs, fit_results, posts, inputs_lib.fitted_range(inputs),
                                       cfg, log=config_lib.log)
    scales = {law: b["scale"] for law, b in backtests.items()}
    io.write_json(os.path.join(fit_dir, "backtest.json"), backtests)
    config_lib.log(f"backtests done in {time.time() - t0:.0f}s")
  elif os.path.exists(os.path.join(fit_dir, "backtest.json")):
    os.remove(os.path.join(fit_dir, "backtest.json"))  # an earlier fit's, not this one's
  extrapolation = scoring.score_heldout(inputs, posts, cfg, scales)
  summary = {
      "inputs": inputs_lib.describe(inputs, results_path, rungs_path),
      "laws": list(inputs.laws), "skipped": inputs.skipped, "point": point,
      "posterior": {name: _param_summary(post) for name, post in posts.items()},
      "posterior_files": {name: os.path.relpath(posterior_path(out_dir, name), out_dir)
                          for name in posts},
      "diagnostics": convergence, "converged": not unconverged, "discrepancy": scales,
      "loo": loo,
      "extrapolation": extrapolation["summary"], "seconds": time.time() - start,
      "config": cfg.to_dict()}
  io.write_json(os.path.join(fit_dir, "extrapolation.json"), extrapolation)
  io.write_json(os.path.join(fit_dir, "diagnostics.json"), convergence)
  io.write_json(os.path.join(fit_dir, "summary.json"), summary)
  config_lib.log(f"fit written to {fit_dir} ({time.time() - start:.0f}s)")
  return summary


def run_fit(workdir: str, cfg) -> dict:
  """The ladder's fit stage: workdir/results.jsonl (+ rungs.jsonl) → workdir/fit/."""
  rungs = os.path.join(workdir, "rungs.jsonl")
  return fit_tables(os.path.join(workdir, "results.jsonl"), rungs if os.path.exists(rungs) else None,
                    workdir, cfg)
