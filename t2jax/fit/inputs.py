"""The fit's inputs: tables read and validated, held-out rows, chance floors, the laws to fit.

A task's chance floor and whether it is guessable come from the results rows (`chance`,
`guessable`, as the task was evaluated), else from the registry's default task (older tables).
A guessable task (one fixed answer passes >= 10%, e.g. lettered multiple choice) is refused for
the accuracy laws: pass@k -> 1 for any model, and the planner always weighs k > 1.

Nothing is written here: bad tables or settings raise ValueError (file, data rows, fix) before any
stage writes a file. Imports numpy only (through `laws.table` and `io`).
"""

import dataclasses
from typing import Optional

import numpy as np

from t2jax.fit import config as config_lib
from t2jax.laws import table as table_lib


@dataclasses.dataclass(frozen=True)
class Inputs:
  """Validated tables: losses (one row per model) and/or per-question results, with held-out flags."""
  losses: Optional[table_lib.LossTable]
  results: Optional[table_lib.ResultsTable]
  results_heldout: Optional[np.ndarray]  # bool per results row
  laws: tuple
  skipped: dict  # law (or 'task NAME') -> why it is not fitted
  floors: dict  # task -> chance accuracy (Approach 2's floor)


def is_heldout(tokens_per_param, max_tokens_per_param: float) -> np.ndarray:
  """The held-out rule (ladder rungs, and tables without `heldout` flags): D/N above the limit."""
  return np.asarray(tokens_per_param) > max_tokens_per_param


def heldout_mask(N, D, max_tokens_per_param: float) -> np.ndarray:
  """`is_heldout` of every row of a table with columns N and D."""
  return is_heldout(np.asarray(D) / np.asarray(N), max_tokens_per_param)


def _registry_properties(name: str) -> tuple:
  """(chance, guessable) of the registry's default task `name`; (0, False) if not registered."""
  from t2jax import tasks as tasks_lib  # the registry is only needed for registered task names
  if name not in tasks_lib.task_names():
    return 0.0, False
  task = tasks_lib.get_task(name)
  return (1.0 / task.num_choices if task.num_choices else 0.0), bool(task.guessable)


def task_properties(results: table_lib.ResultsTable, floors_text: str) -> tuple:
  """({task: chance floor}, [guessable tasks]) from the rows' `chance` and `guessable` (rows
  without them: the registry's default task); the `floors` setting overrides the floor. Raises
  when a task's rows disagree (models evaluated in different formats)."""
  given = config_lib.parse_floors(floors_text)
  floors, guessable = {}, []
  for name in results.tasks:
    mask = results.task == name
    chance_R, guessable_R = results.chance[mask], results.guessable[mask]
    if not (np.isfinite(chance_R).all() and np.isfinite(guessable_R).all()):
      chance, is_guessable = _registry_properties(name)
      chance_R = np.where(np.isfinite(chance_R), chance_R, chance)
      guessable_R = np.where(np.isfinite(guessable_R), guessable_R, float(is_guessable))
    for field, values in (("chance", chance_R), ("guessable", guessable_R)):
      if np.unique(values).size > 1 and not (field == "chance" and name in given):
        raise ValueError(f"{results.source}: task {name!r} rows disagree on `{field}` "
                         f"({np.unique(values).tolist()}; rows without the column take the "
                         "registry's default task), as when models were evaluated in different "
                         f"formats; evaluate every model in one format (tasks.{name}.format)")
    floors[name] = given.get(name, float(chance_R[0]))
    if guessable_R[0]:
      guessable.append(name)
  return floors, guessable


def _flags(rows, name: str, source: str) -> np.ndarray:
  out = []
  for i, row in enumerate(rows, 1):
    value = row.get(name)
    if isinstance(value, bool):
      out.append(value)
    elif str(value).strip().lower() in ("true", "1", "false", "0"):
      out.append(str(value).strip().lower() in ("true", "1"))
    else:
      raise ValueError(f"{source}: data row {i} has `{name}`={value!r}; write true or false")
  return np.array(out, bool)


def _losses_heldout(columns, rows, source, cfg) -> table_lib.LossTable:
  losses = table_lib.losses_from_rows(columns, rows, source)
  if "heldout" not in columns:
    losses = dataclasses.replace(
        losses, heldout=heldout_mask(losses.N, losses.D, cfg.fit_max_tokens_per_param))
  return losses


def load_inputs(results_path: str, rungs_path: Optional[str], cfg) -> Inputs:
  """Reads and validates everything the fit needs; raises ValueError before anything is written."""
  config_lib.check_config(cfg)
  columns, rows = table_lib.read_rows(results_path)
  losses = results = heldout_R = None
  if "task" in columns:
    results = table_lib.results_from_rows(columns, rows, results_path)
    if cfg.accuracy == "nll":
      if not results.has_nll.all():
        bad = (np.flatnonzero(~results.has_nll) + 1)[:10].tolist()
        raise ValueError(f"{results_path}: accuracy='nll' needs `nll` on every row; data rows {bad} "
                         "have none; add nll or use --config.accuracy=samples")
      zeros = np.zeros_like(results.n)
      results = dataclasses.replace(results, n=zeros, c=zeros)
  else:
    losses = _losses_heldout(columns, rows, results_path, cfg)
  if rungs_path:
    if losses is not None:
      raise ValueError(f"--rungs={rungs_path} and --results={results_path} are both loss tables; "
                       "give the per-question results as --results, or drop --rungs")
    rung_columns, rung_rows = table_lib.read_rows(rungs_path)
    losses = _losses_heldout(rung_columns, rung_rows, rungs_path, cfg)
  if results is not None:
    if "heldout" in columns:
      heldout_R = _flags(rows, "heldout", results_path)
    elif rungs_path and "model_id" in columns and "model_id" in rung_columns:
      by_model = dict(zip((str(r.get("model_id")).strip() for r in rung_rows), losses.heldout))
      missing = sorted(set(results.model_id.tolist()) - set(by_model))
      if missing:
        raise ValueError(f"{rungs_path}: has no row for models {missing[:10]} of {results_path}; "
                         "give every evaluated model a rung row, or drop --rungs")
      heldout_R = np.array([by_model[m] for m in results.model_id], bool)
    else:
      heldout_R = heldout_mask(results.N, results.D, cfg.fit_max_tokens_per_param)
    fit_rows = results.select(~heldout_R)
    if len(np.unique(fit_rows.N)) < 2:
      raise ValueError(f"{results_path}: the rows kept for the fit (not held out) cover "
                       f"{len(np.unique(fit_rows.N))} model size(s); a law needs at least 2; raise "
                       "fit_max_tokens_per_param or add rungs")
  if losses is not None and len(np.unique(losses.fit_rows().N)) < 2:
    raise ValueError(f"{losses.source}: the rungs kept for the fit (not held out) cover fewer than "
                     "2 model sizes; raise fit_max_tokens_per_param or add rungs")
  floors, guessable = task_properties(results, cfg.floors) if results is not None else ({}, [])
  left_out = {}
  if results is not None and cfg.accuracy == "samples":
    results, heldout_R, left_out = _drop_unsolved_tasks(results, heldout_R)
  laws, skipped = _choose_laws(losses, results, heldout_R, cfg)
  accuracy_laws = [law for law in laws if law != "chinchilla"]
  if guessable and accuracy_laws:
    raise ValueError(
        f"{results_path}: tasks {guessable} are guessable (one fixed answer passes >= 10% of "
        f"questions, e.g. lettered multiple choice): pass@k -> 1 for any model, and {accuracy_laws} "
        "would plan k > 1 (the planner's inference budgets); evaluate them in cloze form: "
        + ", ".join(f"tasks.{name}.format='cloze'" for name in guessable)
        + "; or drop them from eval.tasks; or fit only chinchilla (--config.laws=chinchilla)")
  return Inputs(losses, results, heldout_R, laws, {**skipped, **left_out}, floors)


def describe(inputs: Inputs, results_path: str, rungs_path: Optional[str]) -> dict:
  """The `inputs` section of fit/summary.json: the tables, row counts, fitted and held-out models."""
  out = {"results": results_path, "rungs": rungs_path}
  if inputs.losses is not None:
    out["loss_rows"] = len(inputs.losses)
    out["loss_rows_heldout"] = int(inputs.losses.heldout.sum())
  if inputs.results is not None:
    r, held = inputs.results, inputs.results_heldout
    out.update(result_rows=len(r), tasks=list(r.tasks),
               models_fit=sorted(set(r.model_id[~held].tolist())),
               models_heldout=sorted(set(r.model_id[held].tolist())))
  out["fitted_range"] = fitted_range(inputs)
  return out


def fitted_range(inputs: Inputs) -> dict:
  """The span of the rows the laws are fitted on: N, tokens per parameter D/N and compute 6ND
  (what the planner's extrapolation distances are measured against)."""
  N, D = [], []
  if inputs.losses is not None:
    rows = inputs.losses.fit_rows()
    N.append(rows.N), D.append(rows.D)
  if inputs.results is not None:
    keep = ~inputs.results_heldout
    N.append(inputs.results.N[keep]), D.append(inputs.results.D[keep])
  N, D = np.concatenate(N).astype(np.float64), np.concatenate(D).astype(np.float64)
  return {"N_min": float(N.min()), "N_max": float(N.max()),
          "tokens_per_param_min": float((D / N).min()), "tokens_per_param_max": float((D / N).max()),
          "compute_min": float((6.0 * N * D).min()), "compute_max": float((6.0 * N * D).max())}


def _drop_unsolved_tasks(results, heldout_R) -> tuple:
  """Leaves out of the accuracy laws the tasks that no fitted model ever solved: with c = 0
  everywhere nothing links their pass@k to N and D (the Beta concentration runs off to 0)."""
  fit_rows = results.select(~heldout_R)
  unsolved = [t for t in results.tasks if fit_rows.c[fit_rows.task == t].sum() == 0]
  if not unsolved:
    return results, heldout_R, {}
  left_out = {f"task {t}": "no correct sample in any fitted model; left out of approach1 and "
              "approach2 (evaluate more samples, or train longer)" for t in unsolved}
  for name, why in left_out.items():
    config_lib.log(f"{name}: {why}")
  keep_R = ~np.isin(results.task, unsolved)
  if not keep_R.any():
    return None, None, left_out
  return results.select(keep_R), heldout_R[keep_R], left_out


def _unidentified_tasks(fit_rows) -> list:
  """Tasks whose Approach-1 targets from samples (`laws.targets`) exist for fewer than 2 model
  sizes: a model × task is identified when some question has 0 < c < n."""
  interior_R = (fit_rows.c > 0) & (fit_rows.c < fit_rows.n)
  return [t for t in fit_rows.tasks
          if np.unique(fit_rows.N[interior_R & (fit_rows.task == t)]).size < 2]


def _choose_laws(losses, results, heldout_R, cfg) -> tuple:
  """The laws to fit and why the others are not; requested but impossible laws raise."""
  why = {}
  if losses is None:
    why["chinchilla"] = "no losses table (give --rungs, or a table with N, D, loss)"
  if results is None:
    why["approach1"] = why["approach2"] = "no per-question results table"
  else:
    fit_rows = results.select(~heldout_R)
    unidentified = _unidentified_tasks(fit_rows)
    if cfg.accuracy == "nll":
      if not cfg.k_grid:
        why["approach1"] = ("accuracy='nll' leaves no sample count n to bound k; set "
                            "--config.k_grid, e.g. '(1, 2, 4, 8)'")
    elif not results.sampled.all():
      why["approach1"] = ("some rows have no samples (n, c) for the targets from samples; use "
                          "--config.accuracy=nll (p = exp(-nll)) with --config.k_grid")
    elif unidentified:
      why["approach1"] = (
          f"tasks {unidentified}: fewer than 2 fitted model sizes have a question "
          "solved in some but not all of its samples, which the targets need (a task's Beta over "
          "questions is not identified otherwise); sample more (eval.num_samples), or use "
          "--config.accuracy=nll with --config.k_grid")
    if not fit_rows.has_nll.all():
      why["approach2"] = "some rows have no gold-answer `nll` for the task loss"
  requested = config_lib.requested_laws(cfg)
  if requested is None:
    laws = tuple(law for law in config_lib.LAWS if law not in why)
    if not laws:
      raise ValueError(f"no law can be fitted: {why}")
    return laws, why
  impossible = {law: why[law] for law in requested if law in why}
  if impossible:
    raise ValueError(f"fit config `laws`={cfg.laws!r}: cannot fit {impossible}; fix the tables or "
                     "drop those laws")
  return requested, {law: "not requested" for law in config_lib.LAWS if law not in requested}
