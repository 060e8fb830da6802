"""The plan stage: every posterior draw through the T2 planner (`laws.optimize`) → `out_dir/plan/`.

For the configured training budgets C, per-token inference budgets C_inf and lifecycle query
counts Q, beside the training-only optimum (k = 1, the same law) and, with a losses table, the
Chinchilla optimum. N is searched within the fitted model sizes ×/÷ `n_range_factor` (unless
`bound_n` is False); every entry says how far D*/N* and the compute lie beyond the fitted range, and
the table entries carry each task's own optimum. Where the fit ran backtests, every draw carries its
model discrepancy (`laws.discrepancy`), so the intervals widen with the distance a plan
extrapolates. Writes plan/plan.json (fields: docs/fitting.md).
"""

import os
import time
from typing import Optional

import jax.numpy as jnp
import numpy as np

from t2jax import io
from t2jax.fit import config as config_lib
from t2jax.laws import approach1, approach2, chinchilla, discrepancy, optimize
from t2jax.laws import posterior as posterior_lib



def _approach1_task_passk(params: dict, N, D, k):
  """Approach 1's pass@k per task, exp(−T) with T widened by the draw's discrepancy."""
  T = approach1.neg_log_passk(params, N, D, k)
  return jnp.exp(-discrepancy.widen("log", T, params, N, D))


def _approach2_task_passk(params: dict, N, D, k):
  """Approach 2's E[pass@k] per task, widened by the draw's discrepancy on the logit scale."""
  return discrepancy.widen("logit", approach2.expected_passk(params, N, D, k), params, N, D)


# Per task (params (T,) → (T, ...query)) and task mean (the planner's objective); a draw's
# discrepancy keys, where the fit ran backtests, move its predictions (`discrepancy.widen`).
TASK_PASSK_FNS = {"approach1": _approach1_task_passk, "approach2": _approach2_task_passk}
PASSK_FNS = {law: (lambda p, N, D, k, f=f: jnp.mean(f(p, N, D, k), axis=0))
             for law, f in TASK_PASSK_FNS.items()}
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


def law_draws(law: str, posts: dict, max_draws: int, scale: Optional[dict] = None,
              seed: int = 0) -> dict:
  """Planner draws of a law, thinned evenly to at most `max_draws` (Approach 1: tasks stacked),
  with the discrepancy keys drawn from `scale` (the fit summary's `discrepancy[law]`) if given."""
  if law == "approach1":
    names = law_tasks(law, posts)
    keys = posts[f"approach1/{names[0]}"].draws
    draws = {k: np.stack([posts[f"approach1/{name}"].draws[k] for name in names], axis=1)
             for k in keys}
  else:
    draws = dict(posts[law].draws)
  S = len(next(iter(draws.values())))
  keep = np.unique(np.linspace(0, S - 1, min(S, max_draws)).round().astype(int))
  draws = {k: v[keep] for k, v in draws.items()}
  if scale is not None:
    draws.update(discrepancy.draws(scale, len(keep), law_tasks(law, posts), seed))
  return draws


def law_tasks(law: str, posts: dict) -> list:
  """The tasks along the task axis (axis 1) of `law_draws(law, ...)`."""
  if law == "approach1":
    return sorted(name.split("/", 1)[1] for name in posts if name.startswith("approach1/"))
  return list(posts[law].meta["tasks"])


def fold_tasks(draws: dict) -> dict:
  """Draws [S, T, ...] → [T·S, 1, ...]: each task a law of its own, task-major, so that the
  task-mean objective plans one task (one compiled planner serves every task)."""
  return {k: np.swapaxes(v, 0, 1).reshape((-1, 1) + v.shape[2:]) for k, v in draws.items()}


def search_grid(cfg, fitted_range: dict) -> optimize.SearchGrid:
  """The planner's grid: N within [N_min/f, f·N_max] of the fitted sizes (f = `n_range_factor`),
  unbounded when `bound_n` is False."""
  if not cfg.bound_n:
    return optimize.SearchGrid()
  f = float(cfg.n_range_factor)
  return optimize.SearchGrid(n_min=fitted_range["N_min"] / f, n_max=fitted_range["N_max"] * f)


def extrapolation(tokens_per_param, compute, fitted_range: dict) -> dict:
  """How far a plan lies beyond the fitted rows: median D/N over the largest fitted D/N, and median
  training compute 6ND over the largest fitted 6ND (> 1: extrapolated)."""
  return {"tokens_per_param_factor": _median(tokens_per_param) / fitted_range["tokens_per_param_max"],
          "compute_factor": _median(compute) / fitted_range["compute_max"]}


def _median(x) -> float:
  """The median of the finite values (NaN where there are none)."""
  x = np.asarray(x, np.float64)
  return float(np.median(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def _interval(x, key: str = "") -> dict:
  return optimize.interval(x, method=_METHODS.get(key, "linear"))


_ENTRY_KEYS = ("N", "D", "tokens_per_param", "k", "accuracy")


def _estimates(out, idx, fitted_range: dict) -> dict:
  """Median and 90% interval of one plan cell (out arrays [S, ...]) and its extrapolation."""
  cell = {key: out[key][(slice(None),) + idx] for key in _ENTRY_KEYS}
  entry = {key: _interval(x, key) for key, x in cell.items()}
  entry["extrapolation"] = extrapolation(cell["tokens_per_param"], 6.0 * cell["N"] * cell["D"],
                                         fitted_range)
  return entry


def _plan_entry(out, idx, fitted_range: dict, per_task: dict) -> dict:
  """One plan cell: estimates, flags, and each task's own optimum (per_task: task → out [S, ...])."""
  entry = dict(_estimates(out, idx, fitted_range), **_flags(out, idx))
  entry["per_task"] = {task: dict({key: _interval(o[key][(slice(None),) + idx], key)
                                   for key in _ENTRY_KEYS}, **_flags(o, idx))
                       for task, o in per_task.items()}
  return entry


def _flags(out, idx) -> dict:
  return {f"{flag}_fraction": float(np.mean(out[flag][(slice(None),) + idx]))
          for flag in ("feasible", "at_grid_edge", "at_n_bound")}


def _by_task(out, tasks) -> dict:
  """Planner output on `fold_tasks` draws [T·S, ...] → {task: [S, ...]}."""
  return {task: {key: v.reshape((len(tasks), -1) + v.shape[1:])[t] for key, v in out.items()}
          for t, task in enumerate(tasks)}


def _frontier_budgets(budgets) -> np.ndarray:
  return np.geomspace(budgets.min() / 10.0, budgets.max() * 10.0, 13)


def plan_law(law: str, draws: dict, tasks: list, cfg, chinchilla_draws: Optional[dict],
             fitted_range: dict) -> dict:
  """Every planner output of one law (draws [S, T]; `tasks` names T): tables per (C, C_inf) and
  (C, Q) with per-task optima, frontier, isoFLOP curves."""
  fn = PASSK_FNS[law]
  grid = search_grid(cfg, fitted_range)
  budgets = config_lib.floats(cfg, "budgets")
  c_infs = config_lib.floats(cfg, "inference_budgets")
  queries = config_lib.floats(cfg, "queries")
  S = len(next(iter(draws.values())))
  dense = _frontier_budgets(budgets)
  both = np.concatenate([budgets, dense])  # one compiled call for the table and the dense frontier
  t2_all = optimize.frontier(fn, draws, both, c_infs, grid)
  train_all = optimize.training_only_frontier(fn, draws, both, k=1.0, grid=grid)
  task_draws = fold_tasks(draws)
  t2_task = _by_task(optimize.frontier(fn, task_draws, budgets, c_infs, grid), tasks)
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
      entry = dict(C=C, C_inf=c_inf, **_plan_entry(t2, (i, b), fitted_range, t2_task))
      for name, out in sampled.items():
        entry[name] = _estimates(out, (i, b), fitted_range)
      inference.append(entry)
  life_args = (budgets, queries, float(cfg.prompt_tokens), float(cfg.gen_tokens), grid)
  life = optimize.lifecycle_frontier(fn, draws, *life_args)
  life_task = _by_task(optimize.lifecycle_frontier(fn, task_draws, *life_args), tasks)
  lifecycle = [dict(C=C, queries=q, **_plan_entry(life, (j, b), fitted_range, life_task))
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
  return {"num_draws": S, "tasks": tasks, "inference": inference, "lifecycle": lifecycle,
          "frontier": frontier, "isoflop": isoflop,
          "lifecycle_settings": {"prompt_tokens": cfg.prompt_tokens, "gen_tokens": cfg.gen_tokens}}


def _n_bounds(cfg, fitted_range: dict) -> dict:
  """The N search range for plan.json (N_min, N_max None when unbounded)."""
  grid = search_grid(cfg, fitted_range)
  bounded = bool(cfg.bound_n)
  return {"bounded": bounded, "n_range_factor": float(cfg.n_range_factor),
          "N_min": grid.n_min if bounded else None, "N_max": grid.n_max if bounded else None}


def plan_dir(out_dir: str, cfg) -> dict:
  """The plan stage: from the posteriors in `out_dir/fit/`; writes `out_dir/plan/plan.json` and
  returns it."""
  config_lib.check_config(cfg)
  summary, posts = load_posteriors(out_dir)
  fitted_range = summary["inputs"].get("fitted_range")
  if fitted_range is None:
    raise ValueError(f"{out_dir}/fit/summary.json has no inputs.fitted_range (written by an older "
                     "fit stage); re-run the fit stage")
  start = time.time()
  chin = law_draws("chinchilla", posts, int(cfg.max_plan_draws)) if "chinchilla" in posts else None
  plan = {"budgets": config_lib.floats(cfg, "budgets"),
          "inference_budgets": config_lib.floats(cfg, "inference_budgets"),
          "queries": config_lib.floats(cfg, "queries"), "fitted_range": fitted_range,
          "n_bounds": _n_bounds(cfg, fitted_range), "laws": {},
          "discrepancy": summary.get("discrepancy", {})}
  if chin is not None:
    budgets = plan["budgets"]
    n_SxB, d_SxB = (np.asarray(x) for x in chinchilla.optimum(chin, budgets))
    plan["chinchilla"] = [{"C": C, "N": _interval(n_SxB[:, b]), "D": _interval(d_SxB[:, b]),
                           "tokens_per_param": _interval(d_SxB[:, b] / n_SxB[:, b]),
                           "extrapolation": extrapolation(d_SxB[:, b] / n_SxB[:, b], np.array([C]),
                                                          fitted_range)}
                          for b, C in enumerate(budgets)]
  for law in ("approach2", "approach1"):
    if law in summary["laws"]:
      t0 = time.time()
      config_lib.log(f"plan {law}: {cfg.max_plan_draws} draws max through the planner")
      scale = summary.get("discrepancy", {}).get(law)
      draws = law_draws(law, posts, int(cfg.max_plan_draws), scale, int(cfg.seed))
      plan["laws"][law] = plan_law(law, draws,
                                   law_tasks(law, posts), cfg, chin, fitted_range)
      config_lib.log(f"plan {law}: done in {time.time() - t0:.0f}s")
  plan["primary"] = next(iter(plan["laws"]), None)
  plan["seconds"] = time.time() - start
  io.write_json(os.path.join(out_dir, "plan", "plan.json"), plan)
  config_lib.log(f"plan written to {os.path.join(out_dir, 'plan', 'plan.json')}")
  return plan
