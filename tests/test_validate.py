"""The validate stage: the recommended models trained, sampled at their k, measured vs predicted."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

import helpers
from t2jax import io, sizes, train, validate
from t2jax.fit import planning
from t2jax.laws import optimize, targets
from t2jax.laws import posterior as posterior_lib

REPO = helpers.REPO
TASKS = ("arithmetic", "recall")
C, C_INF = 2e10, 5e5
FITTED = {"N_min": 39504.0, "N_max": 63096.0, "tokens_per_param_min": 2.0,
          "tokens_per_param_max": 4.0, "compute_min": 1e9, "compute_max": 1e11}


def _posterior(draws: dict, meta: dict) -> posterior_lib.Posterior:
  return posterior_lib.Posterior(
      draws=draws, num_chains=1, rhat={k: np.ones(v.shape[1:]) for k, v in draws.items()},
      ess={k: np.full(v.shape[1:], 100.0) for k, v in draws.items()}, num_divergences=0, meta=meta)


def write_fake_fit(workdir, S: int = 16) -> None:
  """fit/ as the fit stage writes it: an Approach-2 posterior over TASKS and a Chinchilla one
  (A = B, α = β, so N_opt = sqrt(C/6))."""
  rng = np.random.default_rng(0)
  T = len(TASKS)
  jitter = lambda mean, scale: mean + scale * rng.standard_normal((S, T))  # noqa: E731
  a2 = {"E": jitter(0.5, 0.02), "A": jitter(30.0, 1.0), "B": jitter(30.0, 1.0),
        "alpha": jitter(0.3, 0.01), "beta": jitter(0.3, 0.01), "sigma": jitter(0.1, 0.0),
        "theta1": jitter(1.0, 0.1), "theta2": jitter(1.0, 0.05), "theta3": jitter(1.0, 0.1),
        "theta4": jitter(0.0, 0.0), "floor": np.zeros((S, T)), "ceil": np.ones((S, T))}
  chin = {"E": np.full(S, 1.0), "A": np.full(S, 400.0), "B": np.full(S, 400.0),
          "alpha": np.full(S, 0.34), "beta": np.full(S, 0.34), "sigma": np.full(S, 0.05)}
  files = {"approach2": "fit/posteriors/approach2.npz", "chinchilla": "fit/posteriors/chinchilla.npz"}
  _posterior(a2, {"law": "approach2", "tasks": list(TASKS)}).save(
      os.path.join(workdir, files["approach2"]))
  _posterior(chin, {"law": "chinchilla"}).save(os.path.join(workdir, files["chinchilla"]))
  io.write_json(os.path.join(workdir, "fit", "summary.json"),
                {"laws": ["chinchilla", "approach2"], "posterior_files": files,
                 "inputs": {"fitted_range": FITTED}})


def _config(tmp_path, corpus=None):
  config = helpers.ladder_config("smoke")
  config.workdir = str(tmp_path / "wd")
  config.eval.tasks = TASKS
  if corpus is not None:
    config.data.train_files = (str(corpus / "train.jsonl"),)
    config.data.val_files = (str(corpus / "val.jsonl"),)
  return config


# ---- fast checks -----------------------------------------------------------------------------------

def test_nearest_size_by_log_n_within_a_family():
  assert sizes.nearest_size(45_000, sizes.CPU_VOCAB, "cpu") == ("cpu-40k", 39504)
  assert sizes.nearest_size(53_000, sizes.CPU_VOCAB, "cpu")[0] == "cpu-60k"
  assert sizes.nearest_size(37e6, sizes.PAPER_VOCAB, "t2")[0] == "t2-34m"
  assert sizes.nearest_size(1.0, sizes.CPU_VOCAB, "cpu")[0] == "cpu-30k"  # the smallest
  assert sizes.nearest_size(31_000, sizes.CPU_VOCAB, "cpu")[0] == "cpu-30k"
  with pytest.raises(ValueError, match="size family 'gpt'"):
    sizes.nearest_size(1e6, sizes.CPU_VOCAB, "gpt")


def test_measure_is_the_share_of_questions_with_a_correct_sample():
  rows = [{"task": "a", "n": 4, "c": c} for c in (0, 1, 4, 0)] + [
      {"task": "b", "n": 4, "c": c} for c in (2, 2)]
  mean, per_task = validate.measure(rows, ("a", "b"), k=4)
  assert per_task["a"]["value"] == 0.5 and per_task["b"]["value"] == 1.0
  assert mean["value"] == 0.75
  assert per_task["b"]["lo"] == per_task["b"]["hi"] == 1.0
  assert 0.5 <= mean["lo"] <= 0.75 <= mean["hi"] <= 1.0
  assert validate.measure(rows, ("a", "b"), k=4) == (mean, per_task)  # fixed seed


def test_measure_for_approach1_is_its_geometric_mean_target():
  """Approach 1 predicts exp(−E_i[−log pass@k_i]); measured the same way on questions with known
  p_i ~ Beta(0.5, 2) it lands near the truth, below the arithmetic mean."""
  rng = np.random.default_rng(0)
  a, b, k, Q = 0.5, 2.0, 16, 400
  rows = [{"task": "a", "n": k, "c": int(c)} for c in rng.binomial(k, rng.beta(a, b, Q))]
  geo, per_task = validate.measure(rows, ("a",), k=k, law="approach1")
  arith, _ = validate.measure(rows, ("a",), k=k)
  truth = np.exp(-targets.expected_neg_log_passk(np.array([a]), np.array([b]), [k])[0, 0])
  assert abs(geo["value"] / truth - 1) < 0.1, (geo, truth)
  assert geo["lo"] < truth < geo["hi"] and geo["value"] < arith["value"] - 0.05
  assert per_task["a"]["value"] == geo["value"]


def test_markdown_says_whether_t2_won_as_predicted():
  def entry(choice, size, pred, meas):
    return {"C": 1e12, "C_inf": 1e7, "choice": choice, "size": size, "N": 1, "D": 2, "k": 3,
            "tokens_per_param": 2.0, "run_id": f"{size}@C1e+12",
            "predicted": {"median": pred, "lo": pred - 0.1, "hi": pred + 0.1},
            "measured": {"value": meas, "lo": meas - 0.05, "hi": meas + 0.05}}
  lines = validate.markdown([entry("t2", "cpu-40k", 0.5, 0.45),
                             entry("chinchilla", "cpu-60k", 0.3, 0.1)])
  assert "beat the Chinchilla-side choice" in lines[-1] and "as predicted" in lines[-1]
  assert "t2 inside, chinchilla outside" in lines[-1]
  same = validate.markdown([entry("t2", "cpu-40k", 0.5, 0.45),
                            entry("chinchilla", "cpu-40k", 0.5, 0.45)])
  assert "round to the same model" in same[-1]


def test_choices_are_planned_with_the_plan_stages_functions_and_bounds(tmp_path):
  config = _config(tmp_path)
  write_fake_fit(config.workdir)
  law = validate.load_law(config, config.workdir)
  n = validate.planned_n(law, [(C, C_INF), (4 * C, C_INF)], validate.CHOICES)
  for c in (C, 4 * C):
    np.testing.assert_allclose(n[(c, C_INF, "chinchilla")], np.sqrt(c / 6.0), rtol=1e-6)  # float32
    for choice in ("t2", "training_only"):  # N searched within the fitted sizes ×/÷ 2
      lo, hi = FITTED["N_min"] / 2 * (1 - 1e-9), FITTED["N_max"] * 2 * (1 + 1e-9)
      assert lo <= n[(c, C_INF, choice)] <= hi
  runs = validate.plan_runs(config, law, sizes.CPU_VOCAB)
  assert [(r.choice, r.size) for r in runs][1] == ("chinchilla", "cpu-60k")
  assert all(r.k == int(C_INF // (2 * r.N)) and r.D % (16 * 128) == 0 for r in runs)


def test_approach1_predictions_are_the_mean_over_tasks_on_every_draw():
  rng = np.random.default_rng(1)
  S = 8
  names = {"E": 0.2, "A": 5.0, "B": 5.0, "G": 1.0, "alpha": 0.3, "beta": 0.3, "gamma": 0.5,
           "sigma": 0.1}
  draws = {k: v * np.exp(0.05 * rng.standard_normal((S, len(TASKS)))) for k, v in names.items()}
  law = validate.Law("approach1", draws, TASKS, None, optimize.SearchGrid())
  mean, per_task = validate.predict(law, 4e4, 8e5, 7, num_questions=100)
  loss_SxT = (draws["E"] + draws["A"] / 4e4 ** draws["alpha"] + draws["B"] / 8e5 ** draws["beta"]
              + draws["G"] / 7 ** draws["gamma"])
  np.testing.assert_allclose(mean["median"], np.median(np.exp(-loss_SxT).mean(axis=1)), rtol=1e-9)
  np.testing.assert_allclose(per_task["recall"]["median"], np.median(np.exp(-loss_SxT[:, 1])),
                             rtol=1e-9)
  # The predictive interval adds the fitted noise σ on log T: it contains the posterior's.
  assert mean["predictive"]["lo"] < mean["lo"] <= mean["hi"] < mean["predictive"]["hi"]


def test_report_section_is_empty_before_the_stage_ran(tmp_path):
  assert validate.report_section(str(tmp_path)) == (None, [])


@pytest.mark.parametrize("overrides,match", [
    ({"choices": ("chinchilla",), "budgets": ((6e16, 1e9),), "max_size_ratio": 2.0},
     r"validate.budgets\[0\]=\(6e\+16, 1e\+09\), choice 'chinchilla': planned N = 1e\+08 .*"
     r"validate.max_size_ratio=2.0"),
    ({"choices": ("chinchilla",), "budgets": ((C, 1e6),), "max_k": 2},
     r"choice 'chinchilla': cpu-60k would draw k = 7 > validate.max_k=2"),
])
def test_bad_settings_found_at_the_stage_start_fail_before_training(tmp_path, monkeypatch,
                                                                    overrides, match):
  config = _config(tmp_path)
  config.validate.update(overrides)
  write_fake_fit(config.workdir)
  monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("a validation run trained"))
  with pytest.raises(ValueError, match=match):
    validate.run_validate(config, config.workdir)
  assert not os.path.exists(os.path.join(config.workdir, "validate"))


def test_chinchilla_choice_needs_a_chinchilla_posterior(tmp_path):
  config = _config(tmp_path)
  write_fake_fit(config.workdir)
  summary_path = os.path.join(config.workdir, "fit", "summary.json")
  summary = io.read_json(summary_path)
  del summary["posterior_files"]["chinchilla"]
  io.write_json(summary_path, summary)
  with pytest.raises(ValueError, match="validate.choices has 'chinchilla'.*no Chinchilla posterior"):
    validate.load_law(config, config.workdir)


# ---- the stage end to end: SIGKILL, resume, skip ---------------------------------------------------

def _cmd(config, *extra):
  return [sys.executable, "-m", "t2jax.launch", "--config=configs/ladder.py:smoke", "--stages=validate",
          f"--config.workdir={config.workdir}",
          f"--config.data.train_files=('{config.data.train_files[0]}',)",
          f"--config.data.val_files=('{config.data.val_files[0]}',)",
          f"--config.data.cache_dir={config.data.cache_dir}", "--config.data.mixture=()",
          "--config.train.checkpoint_every=10", "--config.train.tensorboard=False", *extra]


@pytest.mark.slow
def test_validate_stage_survives_sigkill_and_measures_both_choices(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  helpers.write_tiny_corpus(corpus)
  config = _config(tmp_path, corpus)
  config.data.cache_dir = str(tmp_path / "cache")
  config.data.mixture = ()
  write_fake_fit(config.workdir)
  env = dict(os.environ, XLA_FLAGS="")
  proc = subprocess.Popen(_cmd(config), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines = []
  for line in proc.stdout:  # kill hard in the first run, after its first checkpoint (step 10)
    lines.append(line)
    if line.startswith("[validate 1/") and " step 20/" in line:
      os.kill(proc.pid, signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "".join(lines)

  out = subprocess.run(_cmd(config), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  assert re.search(r"\[validate 1/\d [^\]]+\] resumed from checkpoint at step (10|20)", out.stdout)
  result = io.read_json(os.path.join(config.workdir, "validate", "validation.json"))
  entries = {e["choice"]: e for e in result["entries"]}
  assert set(entries) == {"t2", "chinchilla"} and result["tasks"] == list(TASKS)
  tokens_per_step = config.train.global_batch_size * config.data.seq_len
  law = validate.load_law(config, config.workdir)
  for choice, e in entries.items():
    assert e["N"] == sizes.family_sizes("cpu", sizes.CPU_VOCAB)[e["size"]]
    assert e["D"] % tokens_per_step == 0 and abs(6 * e["N"] * e["D"] - C) <= 3 * e["N"] * tokens_per_step
    assert e["k"] == int(C_INF // (2 * e["N"])) >= 1
    done = io.read_json(os.path.join(config.workdir, "validate", "runs", e["run_id"], "train_done.json"))
    assert (done["N"], done["D"]) == (e["N"], e["D"])
    rows = list(io.read_jsonl(os.path.join(config.workdir, "validate", "runs", e["run_id"],
                                           f"eval_k{e['k']}.jsonl")))
    assert len(rows) == len(TASKS) * config.validate.num_questions and {r["n"] for r in rows} == {e["k"]}
    # The planner's posterior at the trained (N, D, k): baseline_at with C = 6ND and k = floor(...)
    out_ = optimize.baseline_at(planning.PASSK_FNS["approach2"], law.draws,
                                np.full((len(law.draws["E"]), 1), float(e["N"])),
                                [6.0 * e["N"] * e["D"]], [2.0 * e["N"] * (e["k"] + 0.5)])
    assert out_["k"][0, 0, 0] == e["k"]
    expected = optimize.interval(out_["accuracy"][:, 0, 0])
    np.testing.assert_allclose([e["predicted"][q] for q in ("median", "lo", "hi")],
                               [expected[q] for q in ("median", "lo", "hi")], rtol=1e-9)
    assert set(e["tasks"]) == set(TASKS)
  assert entries["chinchilla"]["size"] == "cpu-60k"  # N_opt = sqrt(C/6) = 57,735
  _, md = validate.report_section(config.workdir)
  assert md[0].startswith("## Validation") and "At C = 2e+10, C_inf = 5e+05" in md[-1]

  again = subprocess.run(_cmd(config), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "trained already; skipping" in again.stdout and "evaluated at k=" in again.stdout
  assert " step " not in again.stdout
  assert json.load(open(os.path.join(config.workdir, "validate", "validation.json"))) == json.loads(
      json.dumps(io._jsonable(result)))
