"""Loading and validating losses and results tables (CSV and JSONL)."""

import json

import numpy as np
import pytest

from t2jax.laws import table


def _csv(tmp_path, text, name="t.csv"):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def _jsonl(tmp_path, rows, name="t.jsonl"):
  path = tmp_path / name
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


RESULTS_CSV = """N,D,task,question_id,n,c,nll
1e6,2e7,arith,q1,8,3,1.2
1e6,2e7,arith,q2,8,0,
1e7,2e8,arith,q1,8,8,0.1
1e7,2e8,arith,q2,,,2.5
"""


def test_losses_csv_and_rungs_jsonl_load(tmp_path):
  t = table.load_losses(_csv(tmp_path, "N,D,loss\n1e6,2e7,3.5\n1e7,2e8,3.1\n"))
  np.testing.assert_array_equal(t.N, [1e6, 1e7])
  np.testing.assert_array_equal(t.loss, [3.5, 3.1])
  rungs = [dict(schema_version=1, model_id=f"m{i}", N=n, D=20 * n, val_loss=l, heldout=h)
           for i, (n, l, h) in enumerate([(1e6, 3.5, False), (1e7, 3.1, False), (1e8, 2.8, True)])]
  t = table.load_table(_jsonl(tmp_path, rungs, "rungs.jsonl"))
  assert isinstance(t, table.LossTable) and len(t) == 3
  np.testing.assert_array_equal(t.heldout, [False, False, True])
  assert len(t.fit_rows()) == 2


def test_results_csv_loads_sampled_and_nll_only_rows(tmp_path):
  t = table.load_table(_csv(tmp_path, RESULTS_CSV))
  assert isinstance(t, table.ResultsTable) and t.tasks == ("arith",)
  np.testing.assert_array_equal(t.n, [8, 8, 8, 0])
  np.testing.assert_array_equal(t.c, [3, 0, 8, 0])
  np.testing.assert_array_equal(t.sampled, [True, True, True, False])
  np.testing.assert_array_equal(t.has_nll, [True, False, True, True])
  assert len(set(t.model_id.tolist())) == 2


def _error(path_fn):
  with pytest.raises(ValueError) as info:
    path_fn()
  return str(info.value)


def test_missing_columns_named_with_fix(tmp_path):
  path = _csv(tmp_path, "N,task,question_id,n,c\n1e6,a,q1,4,1\n")
  msg = _error(lambda: table.load_results(path))
  assert path in msg and "missing ['D']" in msg and "add them" in msg
  msg = _error(lambda: table.load_losses(_csv(tmp_path, "N,D\n1,2\n", "l.csv")))
  assert "missing ['loss']" in msg


def test_c_greater_than_n_names_rows_and_fix(tmp_path):
  text = RESULTS_CSV.replace("1e6,2e7,arith,q2,8,0,", "1e6,2e7,arith,q2,8,9,")
  path = _csv(tmp_path, text)
  msg = _error(lambda: table.load_results(path))
  assert path in msg and "`c` > `n` in data rows 2;" in msg and "c <= n" in msg


def test_negative_nan_inf_and_zero_n_name_rows(tmp_path):
  rows = [dict(N=1e6, D=2e7, task="a", question_id="q1", n=4, c=1, nll=0.5),
          dict(N=-1e6, D=2e7, task="a", question_id="q2", n=4, c=1, nll=0.5),
          dict(N=1e7, D=float("nan"), task="a", question_id="q1", n=4, c=1, nll=0.5),
          dict(N=1e7, D=2e8, task="a", question_id="q2", n=4, c=1, nll=float("inf")),
          dict(N=1e7, D=2e8, task="a", question_id="q3", n=0, c=0, nll=0.5),
          dict(N=1e7, D=2e8, task="a", question_id="q4", n=4, c=-1, nll=0.5)]
  path = _jsonl(tmp_path, rows)
  msg = _error(lambda: table.load_results(path))
  assert path in msg
  assert "`N` not > 0 in data rows 2;" in msg
  assert "NaN or infinite `D` in data rows 3;" in msg
  assert "NaN or infinite `nll` in data rows 4;" in msg
  assert "`n` = 0 in data rows 5;" in msg and "n >= 1" in msg
  assert "`c` not >= 0 in data rows 6;" in msg
  assert msg.count("fix:") == 5


def test_csv_nan_and_empty_cells(tmp_path):
  path = _csv(tmp_path, "N,D,loss\n1e6,2e7,nan\n1e7,,3.0\n1e8,2e9,abc\n")
  msg = _error(lambda: table.load_losses(path))
  assert "NaN or infinite `loss` in data rows 1;" in msg
  assert "empty `D` in data rows 2;" in msg
  assert "non-numeric `loss` in data rows 3;" in msg


def test_single_model_size_rejected(tmp_path):
  path = _csv(tmp_path, "N,D,loss\n1e6,2e7,3.5\n1e6,4e7,3.4\n")
  msg = _error(lambda: table.load_losses(path))
  assert path in msg and "one distinct model size" in msg and "add rows for other models" in msg
  text = "\n".join(RESULTS_CSV.splitlines()[:3]) + "\n"
  assert "one distinct model size" in _error(lambda: table.load_results(_csv(tmp_path, text, "r.csv")))


def test_duplicates_counts_and_missing_observations_rejected(tmp_path):
  rows = [dict(N=1e6, D=2e7, task="a", question_id="q1", n=4, c=1),
          dict(N=1e6, D=2e7, task="a", question_id="q1", n=4, c=2),
          dict(N=1e7, D=2e8, task="a", question_id="q1", n=4),
          dict(N=1e7, D=2e8, task="a", question_id="q2", n=4.5, c=1)]
  msg = _error(lambda: table.load_results(_jsonl(tmp_path, rows)))
  assert "only one of `n`, `c` in data rows 3;" in msg
  assert "non-integer `n` in data rows 4;" in msg
  rows = rows[:2] + [dict(N=1e7, D=2e8, task="a", question_id="q1", n=4, c=0)]
  msg = _error(lambda: table.load_results(_jsonl(tmp_path, rows, "d.jsonl")))
  assert "the same (model, task, question_id) twice in data rows 1, 2;" in msg


def test_unknown_extension_and_empty_table(tmp_path):
  assert "use .csv or .jsonl" in _error(lambda: table.load_table(_csv(tmp_path, "N\n", "t.txt")))
  assert "no data rows" in _error(lambda: table.load_table(_csv(tmp_path, "N,D,loss\n")))


def test_optional_task_properties_columns(tmp_path):
  rows = [dict(N=n, D=20 * n, task="sciq", question_id="q1", n=4, c=1, chance=0.25, guessable=True)
          for n in (1e6, 1e7)]
  t = table.load_results(_jsonl(tmp_path, rows))
  np.testing.assert_array_equal(t.chance, [0.25, 0.25])
  np.testing.assert_array_equal(t.guessable, [1.0, 1.0])
  old = table.load_table(_csv(tmp_path, RESULTS_CSV))  # no such columns: NaN, for the caller
  assert np.isnan(old.chance).all() and np.isnan(old.guessable).all()
  rows[1].update(chance=1.0, guessable="maybe")
  msg = _error(lambda: table.load_results(_jsonl(tmp_path, rows, "bad.jsonl")))
  assert "`chance` >= 1 in data rows 2;" in msg and "`guessable` not a boolean in data rows 2;" in msg
