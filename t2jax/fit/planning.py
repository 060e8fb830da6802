"""The plan stage: every posterior draw through the T2 planner (`laws.optimize`) → `out_dir/plan/`.

For the configured training budgets C, per-token inference budgets C_inf and lifecycle query
counts Q, beside the training-only optimum (k = 1, the same law) and, with a losses table, the
Chinchilla optimum. Writes plan/plan.json (fields: docs/fitting.md).
"""

import os
import time
from typing import Optional

import numpy as np

from t2jax import io
from t2jax.fit import config as config_lib
from t2jax.laws import approach1, approach2, chinchilla, optimize
from t2jax.laws import posterior as posterior_lib

PASSK_FNS = {"approach1": approach1.task_mean_passk, "approach2": approach2.task_mean_passk}
_METHODS = {"k": "inverted_cdf"}  # quantiles of the integer k are draws, hence integers


def load_posteriors(out_dir: str) -> tuple:
  """(fit summary, {name: Posterior}) written by the fit stage under `out_dir/fit/`."""
  path = os.path.join(out_dir, "fit", "summary.json")
  if not os.path.exists(path):
    raise ValueError(f"{path} does not exist; run the fit stage first")
  summary = io.read_json(path)
  posts = {name: posterior_lib.Posterior.load(os.path.join(out_dir, rel))
           for name, rel in summary["posterior_files"].items()}
  return summary, posts


def law_draws(law: str, posts: dict, max_draws: int) -> dict:
  """Planner draws of a law, thinned evenly to at most `max_draws` (Approach 1: tasks stacked)."""
  if law == "approach1":
    names = sorted(name for name in posts if name.startswith("approach1/"))
    keys = posts[names[0]].draws
    draws = {k: np.stack([posts[name].draws[k] for name in names], axis=1) for k in keys}
  else:
    draws = dict(posts[law].draws)
  S = len(next(iter(draws.values())))
  keep = np.unique(np.linspace(0, S - 1, min(S, max_draws)).round().astype(int))
  return {k: v[keep] for k, v in draws.items()}


def _interval(x, key: str = "") -> dict:
  return optimize.interval(x, method=_METHODS.get(key, "linear"))


def _plan_entry(out, idx) -> dict:
  """Median, 90% interval and flags of one plan cell (out arrays [S, ...])."""
  entry = {key: _interval(out[key][(slice(None),) + idx], key)
           for key in ("N", "D", "tokens_per_param", "k", "accuracy")}
  entry["feasible_fraction"] = float(np.mean(out["feasible"][(slice(None),) + idx]))
  entry["at_grid_edge_fraction"] = float(np.mean(out["at_grid_edge"][(slice(None),) + idx]))
  return entry


def _frontier_budgets(budgets) -> np.ndarray:
  return np.geomspace(budgets.min() / 10.0, budgets.max() * 10.0, 13)


def plan_law(law: str, draws: dict, cfg, chinchilla_draws: Optional[dict]) -> dict:
  """Every planner output of one law: tables per (C, C_inf) and (C, Q), frontier, isoFLOP curves."""
  fn = PASSK_FNS[law]
  budgets = config_lib.floats(cfg, "budgets")
  c_infs = config_lib.floats(cfg, "inference_budgets")
  queries = config_lib.floats(cfg, "queries")
  S = len(next(iter(draws.values())))
  dense = _frontier_budgets(budgets)
  both = np.concatenate([budgets, dense])  # one compiled call for the table and the dense frontier
  t2_all = optimize.frontier(fn, draws, both, c_infs)
  train_all = optimize.training_only_frontier(fn, draws, both, k=1.0)
  t2 = {key: v[..., :len(budgets)] for key, v in t2_all.items()}
  train_only = {key: v[..., :len(budgets)] for key, v in train_all.items()}
  t2_dense = {key: v[..., len(budgets):] for key, v in t2_all.items()}
  train_dense = {key: v[..., len(budgets):] for key, v in train_all.items()}
  baselines = {"training_only": train_only["N"]}
  if chinchilla_draws is not None:
    n_opt_SxB = np.asarray(chinchilla.optimum(chinchilla_draws, budgets)[0])
    baselines["chinchilla"] = np.resize(n_opt_SxB, (S, len(budgets)))
  sampled = {name: optimize.baseline_at(fn, draws, n_SxB, budgets, c_infs)
             for name, n_SxB in baselines.items()}
  inference = []
  for i, c_inf in enumerate(c_infs):
    for b, C in enumerate(budgets):
      entry = dict(C=C, C_inf=c_inf, **_plan_entry(t2, (i, b)))
      for name, out in sampled.items():
        entry[name] = {key: _interval(out[key][:, i, b], key)
                       for key in ("N", "D", "tokens_per_param", "k", "accuracy")}
      inference.append(entry)
  life = optimize.lifecycle_frontier(fn, draws, budgets, queries, float(cfg.prompt_tokens),
                                     float(cfg.gen_tokens))
  lifecycle = [dict(C=C, queries=q, **_plan_entry(life, (j, b)))
               for j, q in enumerate(queries) for b, C in enumerate(budgets)]
  frontier = {"C": dense, "inference_budgets": c_infs,
              "t2": {key: _interval(t2_dense[key], key)
                     for key in ("N", "tokens_per_param", "k", "accuracy")},
              "training_only": {key: _interval(train_dense[key])
                                for key in ("N", "tokens_per_param", "accuracy")}}
  if chinchilla_draws is not None:
    n_opt_SxC = np.asarray(chinchilla.optimum(chinchilla_draws, dense)[0])
    frontier["chinchilla"] = {"N": _interval(n_opt_SxC),
                              "tokens_per_param": _interval(dense / (6.0 * n_opt_SxC ** 2))}
  isoflop = []
  for C in budgets:
    N_M = np.sqrt(C / 6.0 / np.geomspace(1e5, 1.0, 61))  # tokens per parameter 1e5 … 1
    curves = optimize.isoflop_curves(fn, draws, C, N_M, ks=[1.0], inference_budgets=c_infs)
    isoflop.append({"C": C, "N": N_M, "k1": _interval(curves["by_k"][:, 0]),
                    "by_inference": [_interval(curves["by_inference"][:, i])
                                     for i in range(len(c_infs))]})
  return {"num_draws": S, "inference": inference, "lifecycle": lifecycle, "frontier": frontier,
          "isoflop": isoflop, "lifecycle_settings": {"prompt_tokens": cfg.prompt_tokens,
                                                     "gen_tokens": cfg.gen_tokens}}


def plan_dir(out_dir: str, cfg) -> dict:
  """The plan stage: from the posteriors in `out_dir/fit/`; writes `out_dir/plan/plan.json` and
  returns it."""
  config_lib.check_config(cfg)
  summary, posts = load_posteriors(out_dir)
  start = time.time()
  chin = law_draws("chinchilla", posts, int(cfg.max_plan_draws)) if "chinchilla" in posts else None
  plan = {"budgets": config_lib.floats(cfg, "budgets"),
          "inference_budgets": config_lib.floats(cfg, "inference_budgets"),
          "queries": config_lib.floats(cfg, "queries"), "laws": {}}
  if chin is not None:
    budgets = plan["budgets"]
    n_SxB, d_SxB = (np.asarray(x) for x in chinchilla.optimum(chin, budgets))
    plan["chinchilla"] = [{"C": C, "N": _interval(n_SxB[:, b]), "D": _interval(d_SxB[:, b]),
                           "tokens_per_param": _interval(d_SxB[:, b] / n_SxB[:, b])}
                          for b, C in enumerate(budgets)]
  for law in ("approach2", "approach1"):
    if law in summary["laws"]:
      t0 = time.time()
      config_lib.log(f"plan {law}: {cfg.max_plan_draws} draws max through the planner")
      plan["laws"][law] = plan_law(law, law_draws(law, posts, int(cfg.max_plan_draws)), cfg, chin)
      config_lib.log(f"plan {law}: done in {time.time() - t0:.0f}s")
  plan["primary"] = next(iter(plan["laws"]), None)
  plan["seconds"] = time.time() - start
  io.write_json(os.path.join(out_dir, "plan", "plan.json"), plan)
  config_lib.log(f"plan written to {os.path.join(out_dir, 'plan', 'plan.json')}")
  return plan
