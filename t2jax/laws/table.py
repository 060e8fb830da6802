"""Load and validate the tables the laws are fitted to (CSV or JSONL) into columnar numpy arrays.

Two kinds (schemas in docs/DESIGN.md):
- losses: one row per model, `N, D` and `loss` (user table) or `val_loss` (rungs.jsonl);
- results: one row per model × task × question, `N, D, task, question_id` with samples `n, c`
  and/or the gold-answer `nll` (total nats of the answer). A row may leave `n, c` empty when it
  has `nll` (an NLL-only question); such rows are stored with n = c = 0 and `sampled` False.
  A missing `nll` is stored as NaN with `has_nll` False. Optional task properties, as
  `t2jax.evaluate` writes them: `chance` (the accuracy of a guesser: 1/#choices of a lettered
  task, else 0) and `guessable` (one fixed answer passes >= 10% of questions); NaN where absent
  (older tables), for the caller to fill from the task registry.

Bad tables raise ValueError naming the file, the 1-based data rows (CSV line = row + 1; JSONL
blank lines are not counted), the problem and the fix. Nothing is written here.
"""

import csv
import dataclasses
import os
from typing import Optional

import numpy as np

from t2jax import io

_MAX_ROWS_SHOWN = 10


@dataclasses.dataclass(frozen=True)
class LossTable:
  """Per-model losses: arrays of shape (R,)."""
  N: np.ndarray
  D: np.ndarray
  loss: np.ndarray
  heldout: np.ndarray  # bool; False where the table has no `heldout` column
  source: str

  def __len__(self) -> int:
    return len(self.N)

  def fit_rows(self) -> "LossTable":
    """The rows not held out of the fit."""
    keep = ~self.heldout
    return LossTable(self.N[keep], self.D[keep], self.loss[keep], self.heldout[keep], self.source)


@dataclasses.dataclass(frozen=True)
class ResultsTable:
  """Per-question results: arrays of shape (R,)."""
  model_id: np.ndarray  # str; "N=<N>,D=<D>" where the table has no model_id
  N: np.ndarray
  D: np.ndarray
  task: np.ndarray  # str
  question_id: np.ndarray  # str
  n: np.ndarray  # int64, 0 for NLL-only rows
  c: np.ndarray  # int64, 0 for NLL-only rows
  nll: np.ndarray  # float64, NaN where absent
  chance: np.ndarray  # float64 in [0, 1), NaN where absent
  guessable: np.ndarray  # float64: 1.0 true, 0.0 false, NaN where absent
  source: str

  def __len__(self) -> int:
    return len(self.N)

  @property
  def sampled(self) -> np.ndarray:
    return self.n > 0

  @property
  def has_nll(self) -> np.ndarray:
    return np.isfinite(self.nll)

  @property
  def tasks(self) -> tuple:
    return tuple(sorted(set(self.task.tolist())))

  def select(self, mask: np.ndarray) -> "ResultsTable":
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return ResultsTable(**{k: (v if k == "source" else v[mask]) for k, v in fields.items()})


class _Problems:
  """Collects bad rows per problem, then raises one ValueError listing them all."""

  def __init__(self, source: str):
    self.source = source
    self.found = {}

  def add(self, problem: str, fix: str, bad_R: np.ndarray) -> None:
    rows = np.flatnonzero(bad_R) + 1
    if rows.size:
      self.found.setdefault((problem, fix), []).extend(rows.tolist())

  def raise_if_any(self) -> None:
    if not self.found:
      return
    lines = []
    for (problem, fix), rows in self.found.items():
      rows = sorted(set(rows))
      shown = ", ".join(map(str, rows[:_MAX_ROWS_SHOWN]))
      more = f" and {len(rows) - _MAX_ROWS_SHOWN} more" if len(rows) > _MAX_ROWS_SHOWN else ""
      lines.append(f"  {problem} in data rows {shown}{more}; fix: {fix}")
    raise ValueError(f"{self.source}: bad table (rows are 1-based data rows):\n" + "\n".join(lines))


def read_rows(path: str) -> tuple:
  """Returns (columns, rows) of a .csv or .jsonl/.json file; CSV cells stay strings."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".csv":
    with open(path, encoding="utf-8", newline="") as f:
      reader = csv.DictReader(f)
      rows = list(reader)
      columns = list(reader.fieldnames or [])
  elif ext in (".jsonl", ".json"):
    rows = list(io.read_jsonl(path))
    for i, row in enumerate(rows, 1):
      if not isinstance(row, dict):
        raise ValueError(f"{path}: data row {i} is {type(row).__name__}, not a JSON object; "
                         "write one object per line")
    columns = sorted({key for row in rows for key in row})
  else:
    raise ValueError(f"{path}: unknown table extension {ext!r}; use .csv or .jsonl")
  if not rows:
    raise ValueError(f"{path}: the table has no data rows; fill it or point at another file")
  return columns, rows


def _missing(value) -> bool:
  return value is None or (isinstance(value, str) and not value.strip())


def _numbers(rows, name, problems, *, required=True, integer=False, positive=False):
  """Column `name` as float64 (NaN where missing); records bad cells in `problems`."""
  values_R = np.full(len(rows), np.nan)
  missing_R = np.zeros(len(rows), bool)
  unparsable_R = np.zeros(len(rows), bool)
  for i, row in enumerate(rows):
    value = row.get(name)
    if _missing(value):
      missing_R[i] = True
      continue
    try:
      if isinstance(value, bool):
        raise TypeError
      values_R[i] = float(value)
    except (TypeError, ValueError):
      unparsable_R[i] = True
  if required:
    problems.add(f"empty `{name}`", f"give every row a `{name}` value", missing_R)
  problems.add(f"non-numeric `{name}`", f"write `{name}` as a number", unparsable_R)
  present_R = ~missing_R & ~unparsable_R
  problems.add(f"NaN or infinite `{name}`", f"`{name}` must be finite",
               present_R & ~np.isfinite(values_R))
  finite_R = present_R & np.isfinite(values_R)
  lower = "> 0" if positive else ">= 0"
  problems.add(f"`{name}` not {lower}", f"`{name}` must be {lower}",
               finite_R & ((values_R <= 0) if positive else (values_R < 0)))
  if integer:
    problems.add(f"non-integer `{name}`", f"`{name}` counts samples, write a whole number",
                 finite_R & (np.mod(values_R, 1) != 0))
  return np.where(present_R, values_R, np.nan)


def _strings(rows, name, problems):
  values = [row.get(name) for row in rows]
  problems.add(f"empty `{name}`", f"give every row a `{name}`",
               np.array([_missing(v) for v in values]))
  return np.array(["" if _missing(v) else str(v).strip() for v in values], dtype=object)


def _require_columns(source, columns, required, kind):
  missing = [c for c in required if c not in columns]
  if missing:
    raise ValueError(f"{source}: a {kind} table needs columns {list(required)}; missing {missing} "
                     f"(present: {sorted(columns)}); add them or fix the header")


def _require_sizes(source, N_R):
  sizes = np.unique(N_R)
  if sizes.size < 2:
    raise ValueError(f"{source}: only one distinct model size N={sizes.tolist()}; a scaling law "
                     "needs at least 2 (better 4 or more) sizes, add rows for other models")


def _booleans(rows, name, problems):
  """Column `name` as float64: 1.0 true, 0.0 false, NaN where missing; records bad cells."""
  values_R = np.full(len(rows), np.nan)
  bad_R = np.zeros(len(rows), bool)
  for i, row in enumerate(rows):
    value = row.get(name)
    text = str(value).strip().lower()
    if _missing(value):
      continue
    if isinstance(value, bool) or text in ("true", "1", "false", "0"):
      values_R[i] = float(value if isinstance(value, bool) else text in ("true", "1"))
    else:
      bad_R[i] = True
  problems.add(f"`{name}` not a boolean", "write true or false", bad_R)
  return values_R


def _heldout(rows, problems):
  return _booleans(rows, "heldout", problems) == 1.0


def losses_from_rows(columns, rows, source, *, loss_column: Optional[str] = None) -> LossTable:
  """Validates rows of a losses table (`loss`, or rungs' `val_loss`) into a LossTable."""
  if loss_column is None:
    both = [c for c in ("loss", "val_loss") if c in columns]
    if len(both) == 2:
      raise ValueError(f"{source}: has both `loss` and `val_loss`; pass loss_column= to pick one")
    loss_column = both[0] if both else "loss"
  _require_columns(source, columns, ("N", "D", loss_column), "losses")
  problems = _Problems(source)
  N_R = _numbers(rows, "N", problems, positive=True)
  D_R = _numbers(rows, "D", problems, positive=True)
  loss_R = _numbers(rows, loss_column, problems, positive=True)
  heldout_R = _heldout(rows, problems)
  problems.raise_if_any()
  _require_sizes(source, N_R)
  return LossTable(N_R, D_R, loss_R, heldout_R, source)


def results_from_rows(columns, rows, source) -> ResultsTable:
  """Validates rows of a results table into a ResultsTable."""
  _require_columns(source, columns, ("N", "D", "task", "question_id"), "results")
  if not ({"n", "c"} <= set(columns) or "nll" in columns):
    raise ValueError(f"{source}: a results table needs sample counts `n, c` and/or `nll` columns "
                     f"(present: {sorted(columns)}); add them")
  problems = _Problems(source)
  N_R = _numbers(rows, "N", problems, positive=True)
  D_R = _numbers(rows, "D", problems, positive=True)
  task_R = _strings(rows, "task", problems)
  question_R = _strings(rows, "question_id", problems)
  n_R = _numbers(rows, "n", problems, required=False, integer=True)
  c_R = _numbers(rows, "c", problems, required=False, integer=True)
  nll_R = _numbers(rows, "nll", problems, required=False)
  chance_R = _numbers(rows, "chance", problems, required=False)
  problems.add("`chance` >= 1", "`chance` is a guesser's accuracy, in [0, 1)", chance_R >= 1)
  guessable_R = _booleans(rows, "guessable", problems)
  has_n_R, has_c_R = np.isfinite(n_R), np.isfinite(c_R)
  problems.add("only one of `n`, `c`", "give both counts, or leave both empty on an NLL-only row",
               has_n_R != has_c_R)
  problems.add("`n` = 0", "drop the row, give the samples drawn (n >= 1), or leave n and c empty "
               "on an NLL-only row", has_n_R & (n_R == 0))
  problems.add("`c` > `n`", "c counts correct samples among the n drawn, so c <= n",
               has_n_R & has_c_R & (c_R > n_R))
  problems.add("neither samples nor `nll`", "give `n, c` or `nll` on every row",
               ~(has_n_R & has_c_R) & ~np.isfinite(nll_R))
  if "model_id" in columns:
    model_R = _strings(rows, "model_id", problems)
  else:
    model_R = np.array([f"N={n:g},D={d:g}" for n, d in zip(N_R, D_R)], dtype=object)
  problems.raise_if_any()
  keys = list(zip(model_R.tolist(), task_R.tolist(), question_R.tolist()))
  first = {}
  duplicate_R = np.zeros(len(rows), bool)
  for i, key in enumerate(keys):
    if key in first:
      duplicate_R[i] = duplicate_R[first[key]] = True
    else:
      first[key] = i
  problems.add("the same (model, task, question_id) twice", "merge the repeats into one row "
               "(sum n and c) or drop them", duplicate_R)
  problems.raise_if_any()
  _require_sizes(source, N_R)
  sampled_R = has_n_R & has_c_R
  return ResultsTable(model_id=model_R, N=N_R, D=D_R, task=task_R, question_id=question_R,
                      n=np.where(sampled_R, n_R, 0).astype(np.int64),
                      c=np.where(sampled_R, c_R, 0).astype(np.int64), nll=nll_R,
                      chance=chance_R, guessable=guessable_R, source=source)


def load_losses(path: str, *, loss_column: Optional[str] = None) -> LossTable:
  """Reads a losses table (user `N, D, loss` or rungs.jsonl with `val_loss`)."""
  columns, rows = read_rows(path)
  return losses_from_rows(columns, rows, path, loss_column=loss_column)


def load_results(path: str) -> ResultsTable:
  """Reads a results table (results.jsonl or a user `N, D, task, question_id, n, c[, nll]`)."""
  columns, rows = read_rows(path)
  return results_from_rows(columns, rows, path)


def load_table(path: str):
  """Reads either kind, chosen by the columns: `task` means results, else losses."""
  columns, rows = read_rows(path)
  if "task" in columns:
    return results_from_rows(columns, rows, path)
  return losses_from_rows(columns, rows, path)

