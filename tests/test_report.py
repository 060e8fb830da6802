"""The report: figures (PNG + SVG), report.md opening with the plan table, summary.json."""

import os

import pytest

from t2jax import io, report
from test_fit import fitted_workdir


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  workdir = fitted_workdir(tmp_path_factory)
  return workdir, report.write_report(workdir)


def test_figures_written_as_png_and_svg(written):
  workdir, _ = written
  fig_dir = os.path.join(workdir, "report", "figures")
  for name in report.FIGURES:
    for ext in ("png", "svg"):
      path = os.path.join(fig_dir, f"{name}.{ext}")
      assert os.path.getsize(path) > 1000, path
  with open(os.path.join(fig_dir, "frontier.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_report_opens_with_the_plan_table(written):
  workdir, path = written
  assert path == os.path.join(workdir, "report", "report.md")
  text = open(path).read()
  sections = [line for line in text.splitlines() if line.startswith("## ")]
  assert sections[0].startswith("## What to train") and "approach2" in sections[0]
  lines = text.splitlines()
  header = lines.index(next(line for line in lines if line.startswith("| C (FLOPs) |")))
  assert "train N*" in lines[header] and "sample k*" in lines[header]
  assert "Chinchilla N_opt" in lines[header]
  rows = lines[header + 2:header + 6]
  assert all(row.startswith("| 1e+") for row in rows) and lines[header + 6] == ""
  assert rows[0].count("[") >= 7  # median [lo, hi] in every estimated cell
  for name in report.FIGURES:
    assert f"(figures/{name}.png)" in text
  assert text.index("## Figures") < text.index("## Diagnostics")
  for law in ("chinchilla", "approach1/gen", "approach2"):
    assert f"| {law} |" in text


def test_summary_json(written):
  workdir, _ = written
  summary = io.read_json(os.path.join(workdir, "report", "summary.json"))
  assert summary["law"] == "approach2" and len(summary["plan"]) == 4
  first = summary["plan"][0]
  assert {"C", "C_inf", "N", "D", "k", "accuracy", "chinchilla", "training_only"} <= set(first)
  assert set(summary["extrapolation"]) == {"chinchilla", "approach1", "approach2"}
  posteriors = {"chinchilla", "approach1/gen", "approach2"}
  assert set(summary["figures"]) == set(report.FIGURES) | {"backtest"} | {
      f"trace {name}" for name in posteriors}
  for rel in summary["figures"].values():
    assert os.path.getsize(os.path.join(workdir, "report", rel)) > 1000, rel
  assert set(summary["diagnostics"]) == posteriors
  assert {"chinchilla", "approach1/gen", "approach2/gen"} == set(summary["discrepancy"])


def test_report_shows_backtests_and_psis_loo(written):
  _, path = written
  text = open(path).read()
  assert "## Model discrepancy (backtests inside the fitting set)" in text
  assert "| approach2/gen | logit |" in text and "(figures/backtest.png)" in text
  assert "PSIS-LOO" in text and text.count("| normal |") == 3 and "| yes: configured |" in text
  assert "90% predictive coverage | mean-function coverage |" in text


def test_report_marks_extrapolation_and_per_task_optima(written):
  workdir, path = written
  text = open(path).read()
  lines = text.splitlines()
  header = next(line for line in lines if line.startswith("| C (FLOPs) | C_inf = 2Nk |"))
  assert "beyond the fit" in header
  rows = lines[lines.index(header) + 2:lines.index(header) + 6]
  assert all("D/N ×" in row for row in rows)
  assert any(row.count("†") for row in rows if row.startswith("| 1e+20 "))  # C beyond the fitted 6ND
  assert "† beyond the fitted range" in text and "N* is searched within [" in text
  per_task = next(line for line in lines if line.startswith("| C (FLOPs) | C_inf | task |"))
  assert lines[lines.index(per_task) + 2].split(" | ")[2] == "gen"
  assert "searched without bounds" not in text


def test_unbounded_plan_warns(written):
  workdir, _ = written
  fit, _ = report.planning.load_posteriors(workdir)
  plan = io.read_json(os.path.join(workdir, "plan", "plan.json"))
  plan["n_bounds"] = dict(plan["n_bounds"], bounded=False)
  text = report._markdown(fit, plan, {}, io.read_json(os.path.join(workdir, "fit",
                                                                  "extrapolation.json")), [])
  assert "**Warning: N* was searched without bounds (`bound_n=False`)" in text
