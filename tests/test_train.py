import json
import os
import signal
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import helpers
from t2jax import checkpoint, io, sharding, train
from t2jax.model import ModelConfig
from t2jax.tokenizer import load_tokenizer

REPO = helpers.REPO
# Every sharded dimension is divisible by 8 so any single mesh axis can take all 8 fake devices.
TINY = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=8, d_ff=64, max_seq_len=16)


def _tiny_plan(steps=4):
  return train.RunPlan(model=TINY, n_params=0, steps=steps, tokens=0, warmup_steps=1)


def _step_on(mesh_shape, tokens_BxL1):
  mesh = sharding.make_mesh(mesh_shape)
  tx, schedule = train.make_optimizer(train.default_config(), _tiny_plan())
  shardings = train.state_shardings(TINY, tx, mesh)
  state = train.create_state(TINY, tx, shardings, seed=0)
  grads_fn = jax.jit(lambda p, t: train.loss_and_grads(TINY, p, t),
                     in_shardings=(shardings.params, sharding.batch_sharding(mesh)))
  loss, grads = grads_fn(state.params, tokens_BxL1)
  step = train.make_train_step(TINY, tx, schedule, shardings, mesh)
  new_state, _ = step(state, tokens_BxL1)
  return jax.device_get((loss, grads, new_state.params))


@pytest.fixture(scope="module")
def single_device_reference():
  tokens = jax.random.randint(jax.random.key(0), (16, 17), 0, TINY.vocab_size)
  return tokens, _step_on((1, 1, 1), tokens)


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (1, 1, 8), (2, 2, 2)])
def test_sharded_step_matches_single_device(single_device_reference, mesh_shape):
  tokens, (loss1, grads1, params1) = single_device_reference
  loss, grads, params = _step_on(mesh_shape, tokens)
  np.testing.assert_allclose(loss, loss1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), grads, grads1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), params, params1)


def test_parameters_are_actually_sharded():
  mesh = sharding.make_mesh((1, 2, 4))
  tx, _ = train.make_optimizer(train.default_config(), _tiny_plan())
  shardings = train.state_shardings(TINY, tx, mesh)
  state = train.create_state(TINY, tx, shardings, seed=0)
  kernel = state.params["block_0"]["mlp"]["gate"]["kernel"]  # ("embed", "mlp") → (fsdp, tensor)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert kernel.addressable_shards[0].data.shape == (TINY.d_model // 2, TINY.d_ff // 4)
  mu = state.opt_state[1][0].mu["block_0"]["mlp"]["gate"]["kernel"]
  assert mu.sharding == kernel.sharding


def test_grad_accumulation_matches_one_big_batch():
  tokens = jax.random.randint(jax.random.key(1), (8, 17), 0, TINY.vocab_size)
  params = jax.jit(lambda k: train.init_params(TINY, k))(jax.random.key(0))
  loss1, g1 = jax.jit(lambda p, t: train.loss_and_grads(TINY, p, t))(params, tokens)
  loss4, g4 = jax.jit(lambda p, t: train.loss_and_grads(TINY, p, t, 4))(params, tokens)
  np.testing.assert_allclose(loss4, loss1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g4, g1)


# ---- end-to-end runs on a tiny corpus -------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  helpers.write_tiny_corpus(root)
  return root


def _run_config(corpus, tmp_path) -> ml_collections.ConfigDict:
  config = helpers.ladder_config("smoke")
  config.data.train_files = (str(corpus / "train.jsonl"),)
  config.data.val_files = (str(corpus / "val.jsonl"),)
  config.data.cache_dir = str(tmp_path / "cache")
  config.data.mixture = ()
  config.model.size = "cpu-90k"
  config.train.tokens = 16 * 128 * 24  # 24 steps
  config.train.checkpoint_every = 6
  config.train.log_every = 3
  config.train.tensorboard = False
  return config


def _overrides(config) -> list[str]:
  return [f"--config.{k}={v}" for k, v in {
      "data.train_files": f"('{config.data.train_files[0]}',)",
      "data.val_files": f"('{config.data.val_files[0]}',)",
      "data.cache_dir": config.data.cache_dir, "data.mixture": "()",
      "model.size": config.model.size, "train.tokens": config.train.tokens,
      "train.checkpoint_every": config.train.checkpoint_every,
      "train.log_every": config.train.log_every, "train.tensorboard": False}.items()]


def _train_cmd(config, workdir):
  return [sys.executable, "-m", "t2jax.train", "--config=configs/ladder.py:smoke",
          f"--workdir={workdir}", *_overrides(config)]


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = ""  # one CPU device, as a plain user run
  return env


@pytest.mark.slow
def test_sigkill_and_resume_reproduces_uninterrupted_run(tiny_corpus, tmp_path):
  config = _run_config(tiny_corpus, tmp_path)
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  subprocess.run(_train_cmd(config, straight), cwd=REPO, env=_env(), check=True,
                 capture_output=True, timeout=600)

  proc = subprocess.Popen(_train_cmd(config, resumed), cwd=REPO, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:  # kill hard once step 12 has been reported (checkpoints at 6 and 12)
    if "step 15/" in line:
      os.kill(proc.pid, signal.SIGKILL)
      break
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (resumed / "train_done.json").exists()
  out = subprocess.run(_train_cmd(config, resumed), cwd=REPO, env=_env(), check=True,
                       capture_output=True, text=True, timeout=600)
  assert "resumed from checkpoint at step 12" in out.stdout

  curve = lambda d: [(r["step"], r["loss"]) for r in map(json.loads, open(d / "metrics.jsonl"))]
  assert curve(resumed) == curve(straight)
  assert [s for s, _ in curve(straight)] == list(range(3, 25, 3))
  a, b = (json.load(open(d / "train_done.json")) for d in (straight, resumed))
  assert a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  params = [train.load_params(config, str(d), tokenizer)[1] for d in (straight, resumed)]
  jax.tree.map(np.testing.assert_array_equal, *params)


def test_training_lowers_loss_and_resumes_past_a_damaged_checkpoint(tiny_corpus, tmp_path, capsys):
  config = _run_config(tiny_corpus, tmp_path)
  workdir = str(tmp_path / "run")
  summary = train.train(config, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
  assert summary["val_loss"] < rows[0]["loss"]
  assert summary["D"] == config.train.tokens and summary["steps"] == 24

  # Damage the newest checkpoint; a rerun must fall back to the previous one with a warning.
  os.remove(os.path.join(workdir, "train_done.json"))
  newest = os.path.join(workdir, "ckpt", "24", "state")
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  again = train.train(config, workdir)
  out = capsys.readouterr().out
  assert "damaged" in out and "resumed from checkpoint at step 18" in out
  assert again["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)


def test_load_params_restores_the_trained_parameters_and_reads_nothing_else(tiny_corpus, tmp_path,
                                                                             monkeypatch):
  config = _run_config(tiny_corpus, tmp_path)
  config.train.tokens = 16 * 128 * 6  # 6 steps, the last one checkpointed
  workdir = str(tmp_path / "run")
  train.train(config, workdir)
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  layout = train.layout_run(config, tokenizer.padded_vocab_size)
  tx, _ = train.make_optimizer(config.train, layout.plan)
  shardings = train.state_shardings(layout.plan.model, tx, layout.mesh, layout.param_shardings)
  abstract = checkpoint.abstract_with_shardings(
      jax.eval_shape(lambda: train.create_state(layout.plan.model, tx, shardings, 0)), shardings)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "ckpt"), every=6)
  step, trained = ckpt.restore_latest(abstract)
  ckpt.close()
  assert step == 6

  read = []
  deserialize = ocp.type_handlers.ArrayHandler.deserialize

  async def spy(self, infos, args=None):
    read.extend(info.name for info in infos)
    return await deserialize(self, infos, args)

  monkeypatch.setattr(ocp.type_handlers.ArrayHandler, "deserialize", spy)
  monkeypatch.setattr(train, "make_optimizer", lambda *a: pytest.fail("optimizer rebuilt"))
  monkeypatch.setattr(train, "load_tokenizer", lambda *a: pytest.fail("tokenizer reloaded"))
  model_cfg, params, mesh = train.load_params(config, workdir, tokenizer)
  assert model_cfg == layout.plan.model and dict(mesh.shape) == dict(layout.mesh.shape)
  jax.tree.map(np.testing.assert_array_equal, params, trained.params)
  assert jax.tree.map(lambda p: p.sharding, params) == layout.param_shardings
  assert len(read) == len(jax.tree.leaves(params)) and all(n.startswith("params.") for n in read)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_corpus, tmp_path):
  config = _run_config(tiny_corpus, tmp_path)
  config.train.lr = 1e30  # the first update overflows, so the loss after it is not finite
  config.train.warmup_frac = 0.0
  config.train.grad_clip = 1e30
  workdir = str(tmp_path / "nan")
  with pytest.raises(FloatingPointError, match="lower train.lr"):
    train.train(config, workdir)
  assert not os.path.exists(os.path.join(workdir, "train_done.json"))
  assert not os.listdir(os.path.join(workdir, "ckpt")) or all(
      int(s) < 3 for s in os.listdir(os.path.join(workdir, "ckpt")) if s.isdigit())


@pytest.mark.parametrize("field,value,match", [
    ("model.size", "cpu-7z", "unknown"),
    ("train.tokens", -5, "train.tokens"),
    ("train.global_batch_size", 10, "train.global_batch_size"),
    ("data.train_files", ("/nonexistent/*.jsonl",), "data.train_files"),
])
def test_bad_config_fails_before_compute(tiny_corpus, tmp_path, field, value, match):
  config = _run_config(tiny_corpus, tmp_path)
  config.train.mesh = (4, 1, 1)
  block, name = field.split(".")
  config[block][name] = value
  with pytest.raises(ValueError, match=match):
    train.train(config, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad" / "ckpt")


def test_unknown_preset_and_typo_fail_fast():
  proc = subprocess.run([sys.executable, "-m", "t2jax.train", "--config=configs/ladder.py:nope",
                         "--workdir=/tmp/unused"], cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode != 0 and "unknown preset 'nope'" in proc.stderr
  proc = subprocess.run([sys.executable, "-m", "t2jax.train", "--config=configs/ladder.py:smoke",
                         "--config.train.lrr=1", "--workdir=/tmp/unused"], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "lrr" in proc.stderr
