import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from t2jax import io, ladder, sharding, train
from t2jax.model import Transformer, count_params
from t2jax.tokenizer import load_tokenizer

REPO = helpers.REPO


@pytest.mark.parametrize("preset", ["gpu", "paper"])
def test_large_presets_instantiate_and_shape_check(preset):
  """Every rung's model, state and train step are shape-checked on an 8-device mesh; no compute."""
  config = helpers.ladder_config(preset)
  rungs = ladder.parse_rungs(config)
  vocab = load_tokenizer(io.resolve_path(config.data.tokenizer)).padded_vocab_size
  assert vocab == 50432
  mesh = sharding.make_mesh(config.train.mesh)
  assert config.train.global_batch_size % sharding.batch_divisor(mesh) == 0
  largest = {}
  for rung in rungs:
    plan = train.plan_run(ladder.rung_config(config, rung), vocab)
    assert plan.tokens >= rung.tokens_per_param * plan.n_params
    assert plan.tokens < rung.tokens_per_param * plan.n_params + plan.tokens / plan.steps
    largest[rung.size] = plan
  assert any(r.heldout for r in rungs) and not all(r.heldout for r in rungs)

  plan = max(largest.values(), key=lambda p: p.n_params)
  tx, schedule = train.make_optimizer(config.train, plan)
  shardings = train.state_shardings(plan.model, tx, mesh)
  state = jax.eval_shape(lambda: train.create_state(plan.model, tx, shardings, 0))
  n_total = sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))
  assert n_total == count_params(plan.model)["total"]
  batch = jax.ShapeDtypeStruct((config.train.global_batch_size, config.data.seq_len + 1), jnp.int32)
  step = train.make_train_step(plan.model, tx, schedule, shardings, mesh, config.train.grad_accum)
  new_state, out = jax.eval_shape(step, state, batch)
  assert jax.tree.map(lambda x: x.shape, new_state) == jax.tree.map(lambda x: x.shape, state)
  assert out["loss"].shape == () and out["loss"].dtype == jnp.float32
  logits = jax.eval_shape(lambda p, t: Transformer(plan.model).apply({"params": p}, t),
                          state.params, batch)
  assert logits.shape == (*batch.shape, vocab)


def test_cpu_preset_spans_chinchilla_to_overtrained():
  config = helpers.ladder_config("cpu")
  rungs = ladder.parse_rungs(config)
  ratios = [r.tokens_per_param for r in rungs]
  assert 8 <= len(rungs) <= 15 and min(ratios) <= 20 and max(ratios) >= 200
  assert len({r.size for r in rungs}) >= 3 and any(r.heldout for r in rungs)
  assert config.eval.num_samples >= 64


@pytest.mark.parametrize("rungs,match", [
    (("cpu-40k",), "size@tokens_per_param"),
    (("cpu-7z@10", "cpu-60k@10"), "unknown size"),
    (("cpu-40k@-3", "cpu-60k@10"), "positive number"),
    (("cpu-40k@10", "cpu-40k@10", "cpu-60k@10"), "listed twice"),
    (("cpu-40k@10", "cpu-40k@20"), "at least two model sizes"),
    ((), "ladder.rungs is empty"),
])
def test_bad_rungs_are_rejected(rungs, match):
  config = helpers.ladder_config("smoke")
  config.ladder.rungs = rungs
  with pytest.raises(ValueError, match=match):
    ladder.parse_rungs(config)


def test_only_selects_rungs_by_id_or_index():
  config = helpers.ladder_config("smoke")
  rungs = ladder.parse_rungs(config)
  config.ladder.only = f"1,{rungs[3].id}"
  assert ladder.selected(config.ladder, rungs) == [rungs[1], rungs[3]]
  config.ladder.only = "99"
  with pytest.raises(ValueError, match="ladder.only"):
    ladder.selected(config.ladder, rungs)


def _launch(workdir, *extra):
  env = dict(os.environ, XLA_FLAGS="")
  return [sys.executable, "-m", "t2jax.launch", "--config=configs/ladder.py:smoke",
          f"--config.workdir={workdir}", *extra], env


def test_config_typo_fails_before_any_work(tmp_path):
  cmd, env = _launch(tmp_path / "wd", "--config.train.lrr=1")
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "lrr" in proc.stderr
  assert not (tmp_path / "wd").exists()


def _tiny_ladder(workdir, workers):
  """Three rungs of 20-40 steps, one task of 4 questions × 2 samples of up to 8 tokens."""
  config = helpers.ladder_config("smoke")
  config.workdir = str(workdir)
  config.ladder.rungs = ("cpu-40k@1", "cpu-40k@2", "cpu-60k@1")
  config.ladder.workers = workers
  config.train.eval_batches = 1
  config.train.peak_flops = 1e10  # no matmul measured for the MFU
  config.data.task_docs = 200
  config.eval.max_new_tokens = 8
  config.eval.tasks = ("arithmetic",)
  config.eval.num_questions = 4
  config.eval.num_samples = 2
  return config


def test_workers_give_the_same_tables_as_one_worker(tmp_path, capfd):
  tables = {}
  for workers in (2, 1):
    config = _tiny_ladder(tmp_path / f"w{workers}", workers)
    ladder.run_eval(config, config.workdir, train=True)
    tables[workers] = [(tmp_path / f"w{workers}" / name).read_bytes()
                       for name in ("rungs.jsonl", "results.jsonl")]
  assert tables[2] == tables[1]
  out = capfd.readouterr().out
  assert "[3/3 cpu-60k@1] training (" in out and "[1/3 cpu-40k@1] step 20/20" in out
  assert "[1/3 cpu-40k@1] evaluating 1 tasks" in out


def test_a_failing_worker_names_its_rung(tmp_path):
  config = _tiny_ladder(tmp_path, 2)
  rung = ladder.parse_rungs(config)[1]
  os.makedirs(ladder.rung_dir(str(tmp_path), rung))
  io.write_json(os.path.join(ladder.rung_dir(str(tmp_path), rung), "train_done.json"),
                {"N": 1, "D": 1})  # "trained", but without a checkpoint to evaluate
  config.ladder.only = "1"
  with pytest.raises(ladder.workers.WorkerError, match=r"rung cpu-40k@2 failed(.|\n)*Traceback"):
    ladder.run_eval(config, str(tmp_path))


def test_workers_must_be_a_count():
  config = helpers.ladder_config("smoke")
  config.ladder.workers = -2
  with pytest.raises(ValueError, match="ladder.workers=-2"):
    ladder.parse_rungs(config)


def _workers_of(launcher_pid: int) -> list[int]:
  """Live processes started by the launcher `launcher_pid` as ladder workers."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/environ", "rb") as f:
        if f"T2JAX_LAUNCHER_PID={launcher_pid}".encode() in f.read().split(b"\0"):
          found.append(int(pid))
    except OSError:
      pass
  return found


@pytest.mark.slow
def test_smoke_ladder_survives_sigkill_and_finishes_without_retraining(tmp_path):
  workdir = tmp_path / "smoke"
  cmd, env = _launch(workdir, f"--config.data.cache_dir={tmp_path / 'cache'}")
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines, killed = [], None
  for line in proc.stdout:  # kill hard in the middle of a rung, after its first checkpoint
    lines.append(line)
    if line.startswith("[") and " step 30/" in line and _workers_of(proc.pid):
      killed = line.split("]")[0] + "] "
      os.kill(proc.pid, signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, "".join(lines)
  for _ in range(50):  # the workers die with the launcher (PR_SET_PDEATHSIG)
    if not _workers_of(proc.pid):
      break
    time.sleep(0.1)
  assert not _workers_of(proc.pid), "ladder workers outlived their launcher"
  rung_ids = [r.id for r in ladder.parse_rungs(helpers.ladder_config("smoke"))]
  trained = [i for i, rid in enumerate(rung_ids)
             if (workdir / "rungs" / rid / "train_done.json").exists()]
  assert not (workdir / "rungs" / killed.split()[1][:-1] / "train_done.json").exists()

  out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stdout + out.stderr
  for i in trained:
    assert f"[{i + 1}/5 {rung_ids[i]}] trained already; skipping" in out.stdout
  assert f"{killed}resumed from checkpoint at step 20" in out.stdout
  rungs = [json.loads(l) for l in open(workdir / "rungs.jsonl")]
  assert [r["model_id"] for r in rungs] == rung_ids == ["cpu-40k@2", "cpu-40k@4", "cpu-40k@8",
                                                        "cpu-60k@2", "cpu-60k@4"]
  assert [r["heldout"] for r in rungs] == [False, False, True, False, False]
  results = [json.loads(l) for l in open(workdir / "results.jsonl")]
  assert len(results) == 5 * 2 * 16 and all(r["n"] == 8 for r in results)
  summary = json.load(open(workdir / "report" / "summary.json"))
  assert summary
  assert (workdir / "report" / "report.md").exists()
  manifest = json.load(open(workdir / "manifest.json"))
  assert len(manifest["invocations"]) == 2 and manifest["config"]["preset"] == "smoke"
