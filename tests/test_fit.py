"""Fit and plan stages end to end on a small simulated ladder, input validation, refusal paths, CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from t2jax import fit, io
from t2jax.fit import __main__ as cli_lib
from t2jax.fit import fitting, planning
from t2jax.fit import inputs as inputs_lib
from t2jax.laws import chinchilla, discrepancy, posterior, simulate, table

TINY = dict(num_chains=2, num_warmup=20, num_samples=20, max_plan_draws=8, allow_unconverged=True,
            retries=0, budgets=(1e18, 1e20), inference_budgets=(1e9, 1e11), queries=(1e6, 1e9))
_CACHE = {}


def tiny_config(**overrides):
  cfg = fit.default_config()
  cfg.update(dict(TINY, **overrides))
  return cfg


def write_ladder(workdir) -> None:
  """4 sizes × 4 tokens-per-parameter ratios (10-400; the 117 and 400 rungs are held out), one
  generative task."""
  N, D = simulate.ladder(num_sizes=4, num_ratios=4, N_range=(5e6, 1e8), tokens_per_param=(10, 400))
  task = {"gen": simulate.APPROACH2_TASKS["gen"]}
  io.write_jsonl(os.path.join(workdir, "results.jsonl"),
                 simulate.approach2_rows(N, D, tasks=task, num_questions=40, n=16, seed=0))
  loss = simulate.chinchilla_losses(N, D, seed=0)
  io.write_jsonl(os.path.join(workdir, "rungs.jsonl"), [
      dict(schema_version=1, model_id=f"sim-N{n:.4g}-D{d:.4g}", size="sim", N=n, D=d,
           tokens_per_param=d / n, val_loss=v, train_flops=6 * n * d, heldout=bool(d / n > 100))
      for n, d, v in zip(N, D, loss)])


def fitted_workdir(tmp_path_factory) -> str:
  """A workdir after the fit and plan stages (built once per session; shared with test_report)."""
  if "workdir" not in _CACHE:
    workdir = str(tmp_path_factory.mktemp("ladder"))
    write_ladder(workdir)
    cfg = tiny_config(likelihood="normal")  # `auto` (both, PSIS-LOO's choice): its own test
    _CACHE["fit"] = fitting.run_fit(workdir, cfg)
    _CACHE["plan"] = planning.plan_dir(workdir, cfg)
    _CACHE["workdir"] = workdir
  return _CACHE["workdir"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return fitted_workdir(tmp_path_factory)


def test_fit_writes_posteriors_diagnostics_and_extrapolation(workdir):
  summary = io.read_json(os.path.join(workdir, "fit", "summary.json"))
  assert summary == io._jsonable(_CACHE["fit"])
  assert summary["laws"] == ["chinchilla", "approach1", "approach2"]
  expected = {"chinchilla", "approach1/gen", "approach2"}
  assert set(summary["posterior_files"]) == expected
  for name, rel in summary["posterior_files"].items():
    post = posterior.Posterior.load(os.path.join(workdir, rel))
    assert post.num_draws == 40 and post.num_chains == 2
  for name, d in summary["diagnostics"].items():
    assert d["rhat_max"] >= 0.9 and d["ess_min"] > 0 and d["num_divergences"] >= 0
    assert d["converged"] == (not d["problems"])
    assert "floor" not in d["rhat"]  # a constant in the draws, not a sampled parameter
  # Held-out rungs come from rungs.jsonl's `heldout` flags (tokens per parameter > 100).
  inputs = summary["inputs"]
  assert len(inputs["models_fit"]) == 8 and len(inputs["models_heldout"]) == 8
  assert all(float(m.split("-D")[1]) / float(m.split("-N")[1].split("-")[0]) > 100
             for m in inputs["models_heldout"])
  point = summary["point"]["chinchilla"]["params"]
  assert set(point) == set(chinchilla.NAMES)
  extrap = io.read_json(os.path.join(workdir, "fit", "extrapolation.json"))
  assert set(extrap["summary"]) == {"chinchilla", "approach1", "approach2"}
  assert extrap["summary"]["chinchilla"]["num_points"] == 8
  for row in extrap["rows"]:
    assert row["D"] / row["N"] > 100
    assert row["lo"] <= row["predicted"] <= row["hi"]
    # The predictive interval adds noise and discrepancy to the mean function's (to Monte Carlo
    # error: both are quantiles of a few hundred draws).
    assert row["hi"] - row["lo"] >= 0.95 * (row["mean_hi"] - row["mean_lo"])
  # Chinchilla losses were simulated from the law itself with 1% noise: extrapolation is close.
  assert extrap["summary"]["chinchilla"]["median_abs_rel_error"] < 0.1


def test_fit_backtests_chooses_a_likelihood_and_writes_netcdf(workdir):
  summary = io.read_json(os.path.join(workdir, "fit", "summary.json"))
  backtests = io.read_json(os.path.join(workdir, "fit", "backtest.json"))
  assert set(backtests) == {"chinchilla", "approach1", "approach2"}
  for law, b in backtests.items():
    assert b["folds"] and b["points"], law  # 8 fitted models: rolling-origin and size folds
    assert summary["discrepancy"][law] == b["scale"]
    assert all(p["distance"] >= 0 and np.isfinite(p["error"]) for p in b["points"])
  assert set(summary["discrepancy"]["approach2"]["s0"]) == {"gen"}
  assert all(summary["discrepancy"][law]["rho"] in discrepancy.RHO_GRID for law in backtests)
  for law, entry in summary["loo"].items():
    assert entry["chosen"] == {"likelihood": "normal", "reason": "configured"}
    assert set(entry) == {"chosen", "normal"} and np.isfinite(entry["normal"]["elpd_loo"])
  for name, rel in summary["posterior_files"].items():
    assert os.path.exists(os.path.join(workdir, rel)[:-len(".npz")] + ".nc"), name


def test_auto_likelihood_samples_both_and_keeps_psis_loos_choice(tmp_path):
  workdir = str(tmp_path)
  write_ladder(workdir)
  summary = fitting.run_fit(workdir, tiny_config(laws="chinchilla", discrepancy="none"))
  entry = summary["loo"]["chinchilla"]
  assert {"normal", "student_t"} <= set(entry)
  assert all(np.isfinite(entry[lik]["elpd_loo"]) for lik in ("normal", "student_t"))
  assert entry["chosen"]["likelihood"] in ("normal", "student_t")
  post = posterior.Posterior.load(os.path.join(workdir, summary["posterior_files"]["chinchilla"]))
  assert post.meta["likelihood"] == entry["chosen"]["likelihood"]


def test_plan_tables_intervals_and_baselines(workdir):
  plan = io.read_json(os.path.join(workdir, "plan", "plan.json"))
  assert plan["primary"] == "approach2" and set(plan["laws"]) == {"approach1", "approach2"}
  for law, p in plan["laws"].items():
    assert len(p["inference"]) == 4 and len(p["lifecycle"]) == 4
    for e in p["inference"]:
      if e["feasible_fraction"] == 1:
        for key in ("N", "D", "k", "accuracy"):
          assert e[key]["lo"] <= e[key]["median"] <= e[key]["hi"], (law, key, e)
        assert e["k"]["median"] >= 1 and float(e["k"]["median"]).is_integer()
        np.testing.assert_allclose(6 * e["N"]["median"] * e["D"]["median"], e["C"], rtol=0.2)
        assert e["N"]["median"] <= e["C_inf"] / 2
      assert set(e) >= {"training_only", "chinchilla"}
    for e in p["lifecycle"]:
      assert e["k"]["lo"] >= 1
    assert len(p["frontier"]["C"]) == 13 and len(p["isoflop"]) == 2
  chin = plan["chinchilla"]
  assert [e["C"] for e in chin] == [1e18, 1e20]
  assert chin[1]["N"]["median"] > chin[0]["N"]["median"]


def test_settings_and_inputs_import_without_jax():
  """Configs embed `fit.default_config()`; loading the settings and the table checks stays cheap."""
  code = ("import sys, t2jax.fit, t2jax.fit.inputs; t2jax.fit.check_config(t2jax.fit.default_config()); "
          "print(sorted(m for m in ('jax', 'numpyro', 'matplotlib') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_bad_table_is_rejected_before_anything_is_written(tmp_path):
  rows = simulate.approach2_rows([1e7, 2e7], [2e8, 4e8], num_questions=3, n=4, seed=0)
  rows[4]["c"] = 9  # more correct than drawn
  io.write_jsonl(str(tmp_path / "results.jsonl"), rows)
  with pytest.raises(ValueError, match=r"`c` > `n` in data rows 5"):
    fitting.run_fit(str(tmp_path), tiny_config())
  assert sorted(os.listdir(tmp_path)) == ["results.jsonl"]
  with pytest.raises(ValueError, match="accuracy"):
    fitting.run_fit(str(tmp_path), tiny_config(accuracy="logits"))
  with pytest.raises(ValueError, match="budgets"):
    fit.check_config(tiny_config(budgets=(1e20, -1.0)))
  with pytest.raises(ValueError, match="floors"):
    fit.check_config(tiny_config(floors="sciq=2"))


def fake_chinchilla_posterior(offset_per_chain: float):
  """A stand-in for chinchilla.sample_posterior: iid draws around the point fit, each chain
  shifted by `offset_per_chain` (0: well mixed; large: chains stuck apart)."""

  def sample(N, D, loss, *, point, num_chains, num_warmup, num_samples, seed, likelihood):
    del N, D, loss, num_warmup
    rng = np.random.default_rng(seed)
    chains = {k: v * (1 + offset_per_chain * np.arange(num_chains)[:, None]
                      + 1e-3 * rng.standard_normal((num_chains, num_samples)))
              for k, v in dict(point.params, sigma=0.02).items()}
    return posterior.Posterior.from_chains(chains, 0, {"law": "chinchilla", "likelihood": likelihood})

  return sample


def test_unconverged_chains_are_refused(workdir, tmp_path, monkeypatch):
  """Two chains stuck apart: refused with the reason and no posterior written, unless allowed."""
  monkeypatch.setattr(chinchilla, "sample_posterior", fake_chinchilla_posterior(0.5))
  cfg = tiny_config(laws="chinchilla", allow_unconverged=False, likelihood="normal")
  out = str(tmp_path / "out")
  rungs = os.path.join(workdir, "rungs.jsonl")
  with pytest.raises(fitting.UnconvergedError, match="did not converge.*r-hat of"):
    fitting.fit_tables(rungs, None, out, cfg)
  assert sorted(os.listdir(os.path.join(out, "fit"))) == ["diagnostics.json"]
  assert not io.read_json(os.path.join(out, "fit", "diagnostics.json"))["chinchilla"]["converged"]
  cfg.allow_unconverged = True
  summary = fitting.fit_tables(rungs, None, out, cfg)
  assert summary["converged"] is False and summary["laws"] == ["chinchilla"]


def test_unconverged_law_is_refitted_with_longer_chains(workdir, tmp_path, monkeypatch):
  """Chains that fail the checks at the configured length are refitted once with twice the
  warm-up and draws; the longer, converged run is kept."""
  calls = []

  def sample(N, D, loss, *, num_warmup, **kw):
    calls.append((num_warmup, kw["num_samples"]))
    stuck = fake_chinchilla_posterior(0.5 if len(calls) == 1 else 0.0)
    return stuck(N, D, loss, num_warmup=num_warmup, **kw)

  monkeypatch.setattr(chinchilla, "sample_posterior", sample)
  cfg = tiny_config(laws="chinchilla", allow_unconverged=False, retries=1, likelihood="normal")
  summary = fitting.fit_tables(os.path.join(workdir, "rungs.jsonl"), None, str(tmp_path / "out"), cfg)
  assert calls == [(20, 20), (40, 40)]
  assert summary["converged"] and summary["diagnostics"]["chinchilla"]["num_draws"] == 2 * 40
  cfg.retries = 0
  calls.clear()
  with pytest.raises(fitting.UnconvergedError):
    fitting.fit_tables(os.path.join(workdir, "rungs.jsonl"), None, str(tmp_path / "out2"), cfg)
  assert calls == [(20, 20)]


def test_cli_fits_a_user_loss_table(workdir, tmp_path, monkeypatch):
  """`python -m t2jax.fit` on a CSV of N, D, loss: Chinchilla only, then plan and report.

  The sampler is replaced by well-mixed fake draws (NUTS itself runs in the ladder fixture)."""
  monkeypatch.setattr(chinchilla, "sample_posterior", fake_chinchilla_posterior(0.0))
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # main sets the device count
  rungs = list(io.read_jsonl(os.path.join(workdir, "rungs.jsonl")))
  csv = tmp_path / "losses.csv"
  csv.write_text("N,D,loss\n" + "".join(f"{r['N']},{r['D']},{r['val_loss']}\n" for r in rungs))
  argv = ["fit", f"--results={csv}", f"--out={tmp_path / 'out'}", "--budget=1e19,1e21",
          "--config.num_samples=200", "--config.likelihood=normal"]
  fv = flags.FlagValues()
  cli = cli_lib.define_flags(fv, argv)
  fv(argv)
  cli_lib.main(argv[:1], cli)
  summary = io.read_json(str(tmp_path / "out" / "fit" / "summary.json"))
  assert summary["laws"] == ["chinchilla"] and set(summary["skipped"]) == {"approach1", "approach2"}
  assert summary["converged"] and summary["diagnostics"]["chinchilla"]["num_draws"] == 400
  assert summary["inputs"]["loss_rows_heldout"] == 8  # D/N > fit_max_tokens_per_param = 100
  plan = io.read_json(str(tmp_path / "out" / "plan" / "plan.json"))
  assert plan["primary"] is None and [e["C"] for e in plan["chinchilla"]] == [1e19, 1e21]
  text = (tmp_path / "out" / "report" / "report.md").read_text()
  assert "## Chinchilla optimum" in text and "| 1e+21 |" in text


def _task_rows(task="sciq", **columns):
  rows = simulate.approach2_rows([1e7, 2e7, 4e7], [2e8, 4e8, 8e8],
                                 tasks={task: simulate.APPROACH2_TASKS["mc4"]}, num_questions=20,
                                 n=8, seed=0)
  return [dict(row, **columns) for row in rows]


def test_guessable_task_is_refused_for_the_accuracy_laws(tmp_path):
  """A lettered task (`guessable` rows, as evaluate writes them) would plan k > 1 on a task a fixed
  letter passes: refused, naming it and the fixes, before anything is written."""
  path = str(tmp_path / "results.jsonl")
  io.write_jsonl(path, _task_rows(chance=0.25, guessable=True))
  with pytest.raises(ValueError, match=r"tasks \['sciq'\] are guessable.*tasks.sciq.format='cloze'"
                     r".*drop them from eval.tasks.*--config.laws=chinchilla"):
    fitting.fit_tables(path, None, str(tmp_path / "out"), tiny_config())
  assert sorted(os.listdir(tmp_path)) == ["results.jsonl"]


def test_chance_floors_come_from_the_rows(tmp_path):
  """A lettered task's floor is the rows' chance (1/num_choices), whatever the registry's default
  format; the `floors` setting overrides it; tables without the columns use the registry."""
  rows = table.results_from_rows(*_columns(_task_rows(chance=0.25, guessable=True)), "mem")
  assert inputs_lib.task_properties(rows, "") == ({"sciq": 0.25}, ["sciq"])
  assert inputs_lib.task_properties(rows, "sciq=0.2") == ({"sciq": 0.2}, ["sciq"])
  cloze = table.results_from_rows(*_columns(_task_rows()), "mem")  # older table: the registry
  assert inputs_lib.task_properties(cloze, "") == ({"sciq": 0.0}, [])
  mixed = _task_rows(chance=0.0, guessable=False)
  mixed[0].update(chance=0.25, guessable=True)
  with pytest.raises(ValueError, match=r"task 'sciq' rows disagree on `chance`.*tasks.sciq.format"):
    inputs_lib.task_properties(table.results_from_rows(*_columns(mixed), "mem"), "")
  path = str(tmp_path / "results.jsonl")
  io.write_jsonl(path, _task_rows(task="mytask"))  # unregistered, no columns: floor 0, loads
  loaded = inputs_lib.load_inputs(path, None, tiny_config())
  assert loaded.floors == {"mytask": 0.0} and "approach2" in loaded.laws


def _columns(rows):
  return sorted({k for row in rows for k in row}), rows


def test_approach1_needs_identifiable_targets(tmp_path):
  """n = 1 everywhere: no question is solved in some but not all samples, so the targets from
  samples are censored for every model and Approach 1 is skipped, saying why; from NLLs it fits."""
  rows = [dict(row, n=1, c=min(row["c"], 1)) for row in _task_rows(task="mytask")]
  path = str(tmp_path / "results.jsonl")
  io.write_jsonl(path, rows)
  loaded = inputs_lib.load_inputs(path, None, tiny_config())
  assert loaded.laws == ("approach2",) and "['mytask']: fewer than 2" in loaded.skipped["approach1"]
  assert "k_grid" in inputs_lib.load_inputs(path, None, tiny_config(accuracy="nll")).skipped[
      "approach1"]
  assert "approach1" in inputs_lib.load_inputs(path, None, tiny_config(accuracy="nll",
                                                                       k_grid=(1, 4))).laws
