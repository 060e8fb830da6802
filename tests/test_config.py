"""The whole config is checked before any work; the shared entry-point pieces (cli, stages)."""

import os
import subprocess
import sys

import pytest

import helpers
from t2jax import config_check, launch, ladder, stages, train

REPO = helpers.REPO


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu", "paper"])
def test_every_preset_validates(preset):
  config_check.validate(helpers.ladder_config(preset))


def test_misspelt_eval_task_fails_at_once_from_the_command_line(tmp_path):
  workdir = tmp_path / "wd"
  proc = subprocess.run(
      [sys.executable, "-m", "t2jax.launch", "--config=configs/ladder.py:smoke",
       f"--config.workdir={workdir}", "--config.eval.tasks=('arc_eay',)"],
      cwd=REPO, env=dict(os.environ, XLA_FLAGS=""), capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "eval.tasks[0]='arc_eay'" in proc.stderr and "did you mean 'arc_easy'" in proc.stderr
  assert "== train ==" not in proc.stdout and not workdir.exists()


def _set(config, field, value):
  *blocks, name = field.split(".")
  block = config
  for b in blocks:
    block = block[b]
  block[name] = value


@pytest.mark.parametrize("field,value,match", [
    ("tasks.arithmetic.max_operands", 1, r"tasks.arithmetic.min_operands=2, max_operands=1"),
    ("tasks.recall.num_entitys", 50, r"tasks.recall: unknown option 'num_entitys'"),
    ("tasks.recall.num_entities", 0, r"tasks.recall.num_entities=0: must be a positive integer"),
    ("fit.budgets", (1e12, -1.0), r"fit config `budgets`=\(1000000000000.0, -1.0\).*--config"),
    ("fit.inference_budgets", (0.0,), r"`inference_budgets`.*drop 0"),
    ("fit.max_plan_draws", 0, r"`max_plan_draws`=0 must be >= 1"),
    ("eval.num_questions", 5000, r"eval.tasks\[0\]='arithmetic'.*found only"),
    ("eval.split", "test", r"eval.split='test'"),
    ("data.mixture", (("sciq", 0.1),), r"data.mixture\[0\]: task 'sciq'.*mix only synthetic tasks"),
    ("data.mixture", (("arithmatic", 0.1),), r"data.mixture\[0\]='arithmatic'.*'arithmetic'"),
    ("train.log_every", 0, r"train.log_every=0"),
    ("train.mesh", (2, -1, -1), r"train.mesh=\(2, -1, -1\)"),
    ("validate.choices", ("t2", "chinchila"), r"validate.choices\[1\]='chinchila' is unknown"),
    ("validate.choices", (), r"validate.choices is empty"),
    ("validate.budgets", ((1e8, 1e6),), r"validate.budgets\[0\]=\(1e\+08, 1e\+06\): C is below "
     r"one training step"),
    ("validate.budgets", ((2e10, 1e4),), r"validate.budgets\[0\].*C_inf < 2·N"),
    ("validate.budgets", ((2e10, 1e12),), r"k = 94\d+ > validate.max_k=1024"),
    ("validate.budgets", ((2e10,),), r"validate.budgets\[0\]=\(20000000000.0,\): give a \(C, C_inf\) pair"),
    ("validate.num_questions", 5000, r"validate.num_questions=5000: .*found only"),
    ("validate.max_k", 0, r"validate.max_k=0"),
    ("fit.laws", "approach2", r"validate.choices has 'chinchilla' but fit.laws='approach2'"),
])
def test_bad_setting_fails_before_any_rung_trains(tmp_path, monkeypatch, field, value, match):
  config = helpers.ladder_config("smoke")
  config.workdir = str(tmp_path / "wd")
  _set(config, field, value)
  monkeypatch.setattr(ladder, "run_train", lambda *a: pytest.fail("a rung started training"))
  monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("a model started training"))
  with pytest.raises(ValueError, match=match):
    launch.run(config, stages.STAGES)
  assert not os.path.exists(config.workdir)


def test_check_run_covers_a_single_training_run():
  config = helpers.ladder_config("smoke")
  config.eval.tasks = ("nope",)  # not read by one training run
  config_check.check_run(config)
  config.model.size = "cpu-7z"
  with pytest.raises(ValueError, match="model.size='cpu-7z'"):
    config_check.check_run(config)


def test_parse_stages():
  assert stages.parse_stages("report, fit,train") == ["train", "fit", "report"]
  assert stages.parse_stages("report,validate,plan") == ["plan", "validate", "report"]
  with pytest.raises(ValueError, match="unknown stage"):
    stages.parse_stages("train,evaluate")
  with pytest.raises(ValueError, match="not an analysis stage"):
    stages.run_analysis(["train"], "/nonexistent", None)


def _python(code: str, xla_flags: str = "") -> str:
  env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout.strip()


def test_loading_the_presets_imports_neither_numpyro_nor_matplotlib():
  out = _python("import sys; sys.path.insert(0, 'tests'); import helpers\n"
                "for p in ('smoke', 'cpu', 'gpu', 'paper'): helpers.ladder_config(p)\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                "('numpyro', 'matplotlib')))")
  assert out == "[]"


def test_start_gives_the_cpu_backend_at_least_the_fit_chains():
  code = ("import jax; from t2jax import cli; cli.start(None, cpu_devices={}); "
          "print(jax.local_device_count())")
  assert _python(code.format(3)) == "3"
  assert _python(code.format(2), "--xla_force_host_platform_device_count=4") == "4"
