"""Extrapolation: posterior predictions for the held-out rows against what was observed.

Each approach is scored on its own target: Chinchilla the loss, Approach 1 the task-mean
−log pass@k (observed: the fit's own estimator, `approach1.table_from_results` with the same
`accuracy` source; censored held-out models are listed, not scored), Approach 2 the task-mean
pass@k (observed: `passk.observed_passk`).
"""

import numpy as np

from t2jax import passk
from t2jax.fit import config as config_lib
from t2jax.fit import inputs as inputs_lib
from t2jax.laws import approach1, approach2, chinchilla, optimize


def _scored(approach, quantity, observed_R, pred_SxR, meta_R) -> list:
  s = optimize.summarize(pred_SxR)
  return [dict(meta, approach=approach, quantity=quantity, observed=float(o), predicted=float(m),
               lo=float(lo), hi=float(hi), rel_error=float(m / o - 1.0) if o else None)
          for meta, o, m, lo, hi in zip(meta_R, observed_R, s["median"], s["lo"], s["hi"])]


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


def score_heldout(inputs: inputs_lib.Inputs, posts: dict, cfg) -> dict:
  """Posterior predictions for the held-out rows against what was observed, per approach:
  {"summary": {approach: errors and interval coverage}, "rows": one per scored point,
  "approach1_censored": held-out model × tasks whose targets are censored (not scored)}."""
  rows, censored = [], []
  if "chinchilla" in inputs.laws and inputs.losses.heldout.any():
    held = inputs.losses.heldout
    N, D = inputs.losses.N[held], inputs.losses.D[held]
    pred = np.asarray(chinchilla.loss(posts["chinchilla"].draws, N, D))
    rows += _scored("chinchilla", "loss", inputs.losses.loss[held], pred,
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
        pred = np.asarray(approach1.neg_log_passk(posts[f"approach1/{task}"].draws, t.N, t.D, t.k))
        rows += _scored("approach1", "neg_log_passk", t.loss, pred,
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
        pred_SxTxK = np.asarray(approach2.expected_passk(draws, N, D, ks))
        keep = np.isfinite(obs_K)
        rows += _scored("approach2", "passk", obs_K[keep], pred_SxTxK[:, tasks.index(task)][:, keep],
                        [dict(model_id=model, task=task, N=N, D=D, k=float(k)) for k in ks[keep]])
  summary = {}
  for approach in config_lib.LAWS:
    errors = np.array([abs(r["rel_error"]) for r in rows
                       if r["approach"] == approach and r["rel_error"] is not None])
    covered = [r["lo"] <= r["observed"] <= r["hi"] for r in rows if r["approach"] == approach]
    if errors.size:
      summary[approach] = {"quantity": next(r["quantity"] for r in rows if r["approach"] == approach),
                           "num_points": int(errors.size),
                           "median_abs_rel_error": float(np.median(errors)),
                           "max_abs_rel_error": float(errors.max()),
                           "interval_coverage": float(np.mean(covered))}
  return {"summary": summary, "rows": rows, "approach1_censored": censored}
