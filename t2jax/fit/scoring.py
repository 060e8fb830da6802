"""Extrapolation: posterior predictive intervals for the held-out rows against what was observed.

Each approach is scored on its own target: Chinchilla the loss, Approach 1 the task-mean
−log pass@k (observed: the fit's own estimator, `approach1.table_from_results` with the same
`accuracy` source; censored held-out models are listed, not scored), Approach 2 the task-mean
pass@k (observed: `passk.observed_passk`).

The interval (lo, hi) is the posterior predictive one: each draw's prediction moved by its model
discrepancy at the row's distance (`laws.discrepancy`, where the fit ran backtests) and by the
observation noise (Chinchilla and Approach 1: the fitted σ on the log scale; Approach 2: the
spread of a mean over the row's questions drawn from the draw's Beta law, each measured with its
own number of samples, `backtest.measured_noise` and `measured_share`). `mean_lo`,
`mean_hi` are the mean function's interval alone (the fitted law taken as exact), kept to show
what the widening buys.
"""

import jax
import numpy as np

from t2jax import passk
from t2jax.fit import backtest
from t2jax.fit import config as config_lib
from t2jax.fit import inputs as inputs_lib
from t2jax.laws import approach1, approach2, chinchilla, discrepancy, optimize


def _scored(approach, quantity, observed_R, mean_SxR, pred_SxR, meta_R) -> list:
  s, m = optimize.summarize(pred_SxR), optimize.summarize(mean_SxR)
  return [dict(meta, approach=approach, quantity=quantity, observed=float(o), predicted=float(med),
               lo=float(lo), hi=float(hi), mean_lo=float(mlo), mean_hi=float(mhi),
               rel_error=float(med / o - 1.0) if o else None)
          for meta, o, med, lo, hi, mlo, mhi in zip(meta_R, observed_R, m["median"], s["lo"],
                                                    s["hi"], m["lo"], m["hi"])]


def _sd(scale, N, D, task: str = backtest.LOSS) -> np.ndarray:
  """The discrepancy sd σ(d) of `task` at rows (N, D) (0 without a scale)."""
  return np.zeros(np.shape(N)) if scale is None else discrepancy.sd(scale, task, N, D)


def _log_predictive(mean_SxR, sigma_S, sd_R, rng) -> np.ndarray:
  """Draws of a log-scale quantity: mean · exp(σ(d)·z_s + σ_s·ε_sr)."""
  S, R = mean_SxR.shape
  return mean_SxR * np.exp(sd_R * rng.standard_normal((S, 1))
                           + sigma_S[:, None] * rng.standard_normal((S, R)))


def _model_task_groups(results):
  """(model_id, task) groups of a results table: list of (model, task, N, D, row mask)."""
  groups = []
  for model in np.unique(results.model_id):
    for task in results.tasks:
      mask = (results.model_id == model) & (results.task == task)
      if mask.any():
        i = np.flatnonzero(mask)[0]
        groups.append((model, task, float(results.N[i]), float(results.D[i]), mask))
  return groups


def score_heldout(inputs: inputs_lib.Inputs, posts: dict, cfg, scales: dict) -> dict:
  """Posterior predictive intervals for the held-out rows against what was observed, per approach
  (`scales`: each law's discrepancy scale, {} for none): {"summary": {approach: errors and
  interval coverage}, "rows": one per scored point, "approach1_censored": held-out model × tasks
  whose targets are censored (not scored)}."""
  rows, censored = [], []
  rng = np.random.default_rng(int(cfg.seed))
  if "chinchilla" in inputs.laws and inputs.losses.heldout.any():
    held = inputs.losses.heldout
    N, D = inputs.losses.N[held], inputs.losses.D[held]
    draws = posts["chinchilla"].draws
    mean = np.asarray(chinchilla.loss(draws, N, D))
    pred = _log_predictive(mean, np.asarray(draws["sigma"]), _sd(scales.get("chinchilla"), N, D),
                           rng)
    rows += _scored("chinchilla", "loss", inputs.losses.loss[held], mean, pred,
                    [dict(N=float(n), D=float(d)) for n, d in zip(N, D)])
  if inputs.results is not None and inputs.results_heldout.any():
    held = inputs.results.select(inputs.results_heldout)
    groups = _model_task_groups(held)
    if "approach1" in inputs.laws:
      tables = approach1.table_from_results(held, k_grid=config_lib.k_grid(cfg),
                                            source=cfg.accuracy)
      for task, t in tables.items():
        censored += [dict(task=task, model_id=m, status=s) for m, s in t.censored.items()]
        if not len(t.loss):
          continue
        draws = posts[f"approach1/{task}"].draws
        mean = np.asarray(approach1.neg_log_passk(draws, t.N, t.D, t.k))
        pred = _log_predictive(mean, np.asarray(draws["sigma"]),
                               _sd(scales.get("approach1"), t.N, t.D, task), rng)
        rows += _scored("approach1", "neg_log_passk", t.loss, mean, pred,
                        [dict(model_id=m, task=task, N=float(n), D=float(d), k=float(k))
                         for m, n, d, k in zip(t.model_id, t.N, t.D, t.k)])
    if "approach2" in inputs.laws:
      draws = posts["approach2"].draws
      tasks = list(posts["approach2"].meta["tasks"])
      ks = config_lib.k_grid(cfg)
      if ks is None:
        n_max = min(int(held.n[held.sampled].min()) if held.sampled.any() else 1, 1024)
        ks = approach1.default_k_grid(n_max).astype(np.float64)
      for model, task, N, D, mask in groups:
        obs_K = np.array([passk.observed_passk(held.n[mask], held.c[mask], held.nll[mask], int(k))
                          for k in ks])
        j = tasks.index(task)
        with jax.enable_x64(True):
          a_S, b_S = (np.asarray(x)[:, j] for x in approach2.beta_params(draws, N, D))
          mean_SxK = np.asarray(passk.beta_passk(a_S[:, None], b_S[:, None], ks))
          twice_SxK = np.asarray(passk.beta_passk(a_S[:, None], b_S[:, None], 2 * ks))
        sd = float(_sd(scales.get("approach2"), N, D, task))
        shift_Sx1 = sd * rng.standard_normal((len(a_S), 1))
        Q = int(mask.sum())
        noise_SxK = backtest.measured_noise(a_S, b_S, held.n[mask], ks, mean_SxK, twice_SxK)
        pred_SxK = backtest.measured_share(discrepancy.move("logit", mean_SxK, shift_Sx1, xp=np),
                                           noise_SxK, Q, rng)
        keep = np.isfinite(obs_K)
        rows += _scored("approach2", "passk", obs_K[keep], mean_SxK[:, keep], pred_SxK[:, keep],
                        [dict(model_id=model, task=task, N=N, D=D, k=float(k)) for k in ks[keep]])
  summary = {}
  for approach in config_lib.LAWS:
    errors = np.array([abs(r["rel_error"]) for r in rows
                       if r["approach"] == approach and r["rel_error"] is not None])
    covered = [r["lo"] <= r["observed"] <= r["hi"] for r in rows if r["approach"] == approach]
    mean_covered = [r["mean_lo"] <= r["observed"] <= r["mean_hi"] for r in rows
                    if r["approach"] == approach]
    if errors.size:
      summary[approach] = {"quantity": next(r["quantity"] for r in rows if r["approach"] == approach),
                           "num_points": int(errors.size),
                           "median_abs_rel_error": float(np.median(errors)),
                           "max_abs_rel_error": float(errors.max()),
                           "interval_coverage": float(np.mean(covered)),
                           "mean_interval_coverage": float(np.mean(mean_covered))}
  return {"summary": summary, "rows": rows, "approach1_censored": censored}
