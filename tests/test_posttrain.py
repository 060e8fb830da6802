"""Post-training: loss masks, settings checks, the resumable stage end to end, summary and report.

Train and eval questions of every shipped task are disjoint: tests/test_tasks.py (synthetic) and
tests/test_tasks_real.py (real sets) check that; here `check_config` must catch an overlap.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from t2jax import posttrain_report, checkpoint, io, ladder, posttrain, stages, train
from t2jax.model import ModelConfig, Transformer
from t2jax.tasks.base import Question
from t2jax.tokenizer import load_tokenizer

TINY = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=8, d_ff=64, max_seq_len=16)
EOS = 0
EXAMPLES = [([11, 12, 13], [21, 22]), ([14, 15], [23]), ([16, 17, 18, 19], [24, 25, 26]),
            ([31], [41, 42])]


def test_pack_masks_exactly_the_answer_tokens():
  tokens_RxL1, sft_RxL = posttrain.pack(EXAMPLES, "sft", 12, EOS)
  _, ft_RxL = posttrain.pack(EXAMPLES, "ft", 12, EOS)
  # Whole examples, each closed by EOS (which opens the next); rows of 13 padded with EOS.
  np.testing.assert_array_equal(tokens_RxL1, [
      [EOS, 11, 12, 13, 21, 22, EOS, 14, 15, 23, EOS, EOS, EOS],
      [EOS, 16, 17, 18, 19, 24, 25, 26, EOS, 31, 41, 42, EOS]])
  answers = {21, 22, 23, 24, 25, 26, 41, 42}
  targets_RxL = tokens_RxL1[:, 1:]
  closing = np.zeros_like(sft_RxL)
  closing[0, [5, 9]] = closing[1, [7, 11]] = True  # the EOS after each answer
  np.testing.assert_array_equal(sft_RxL, np.isin(targets_RxL, list(answers)) | closing)
  prompts = np.isin(targets_RxL, [11, 12, 13, 14, 15, 16, 17, 18, 19, 31])
  np.testing.assert_array_equal(ft_RxL, sft_RxL | prompts)
  assert not ft_RxL[0, 10:].any()  # padding carries no loss
  with pytest.raises(ValueError, match="data.seq_len=4"):
    posttrain.pack(EXAMPLES, "ft", 4, EOS)


def test_sft_gradient_ignores_prompt_targets_and_ft_does_not():
  tokens_RxL1, sft_RxL = posttrain.pack(EXAMPLES * 2, "sft", 15, EOS)
  _, ft_RxL = posttrain.pack(EXAMPLES * 2, "ft", 15, EOS)
  params = jax.jit(lambda k: train.init_params(TINY, k))(jax.random.key(0))
  inputs_RxL, targets_RxL = tokens_RxL1[:, :-1], tokens_RxL1[:, 1:]
  changed_RxL = np.where(ft_RxL & ~sft_RxL, (targets_RxL + 7) % TINY.vocab_size, targets_RxL)
  assert (changed_RxL != targets_RxL).sum() == 20

  @jax.jit
  def grads(targets, mask):
    return jax.grad(lambda p: train.cross_entropy(
        Transformer(TINY).apply({"params": p}, inputs_RxL), targets, mask))(params)

  def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  assert same(grads(targets_RxL, sft_RxL), grads(changed_RxL, sft_RxL))
  assert not same(grads(targets_RxL, ft_RxL), grads(changed_RxL, ft_RxL))
  # The training path takes the same mask; an all-ones mask is the pretraining loss.
  tokens = jnp.asarray(tokens_RxL1)
  masked = jax.jit(lambda m, accum: train.loss_and_grads(TINY, params, tokens, accum, mask_BxL=m),
                   static_argnums=1)
  loss, g = masked(sft_RxL, 1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), g,
               grads(targets_RxL, sft_RxL))
  full = jax.jit(lambda: train.loss_and_grads(TINY, params, tokens))()[0]
  np.testing.assert_allclose(masked(np.ones_like(sft_RxL), 1)[0], full, rtol=1e-6)
  assert np.isfinite(masked(sft_RxL, 2)[0]) and float(loss) > 0


def _config(preset="smoke"):
  config = helpers.ladder_config(preset)
  config.posttrain = posttrain.default_config()
  return config


def test_defaults_take_the_eval_tasks_that_have_a_train_split():
  config = _config()
  config.eval.tasks = ("arithmetic", "lambada", "recall")
  assert posttrain.task_names(config.posttrain, config) == ["arithmetic", "recall"]
  posttrain.check_config(config.posttrain, config)
  cpu = _config("cpu")
  posttrain.check_config(cpu.posttrain, cpu)
  assert {k: len(v) for k, v in posttrain.train_questions(cpu.posttrain, cpu).items()} == {
      "arithmetic": 100, "spatial": 100, "recall": 200}


@pytest.mark.parametrize("field, value, match", [
    ("variants", ("ft", "dpo"), r"posttrain.variants=\('ft', 'dpo'\)"),
    ("variants", ("ft", "ft"), "posttrain.variants"),
    ("epochs", 0, "posttrain.epochs=0"),
    ("batch_size", 0, "posttrain.batch_size=0"),
    ("warmup_frac", 1.0, "posttrain.warmup_frac=1.0"),
    ("tasks", ("arithmetic", "lambada"), r"posttrain.tasks\[1\]='lambada'.*no train split"),
    ("tasks", ("arithmetc",), r"posttrain.tasks\[0\]='arithmetc' is not a task"),
    ("rungs", ("cpu-40k@3",), r"posttrain.rungs\[0\]='cpu-40k@3' is not a rung"),
])
def test_bad_settings_fail_naming_the_field(field, value, match):
  config = _config()
  config.posttrain[field] = value
  with pytest.raises(ValueError, match=match):
    posttrain.check_config(config.posttrain, config)


def test_train_questions_overlapping_the_eval_set_fail():
  config = _config()
  config.eval.split = "train"
  with pytest.raises(ValueError, match=r"of task 'arithmetic' is also eval .*same id"):
    posttrain.check_config(config.posttrain, config)


def test_a_reworded_eval_prompt_in_the_train_set_fails(monkeypatch):
  config = _config()
  real_get_task = posttrain.tasks.get_task

  class Leaky:
    def __init__(self, task):
      self.task, self.splits = task, task.splits

    def questions(self, split="eval", limit=None):
      qs = self.task.questions(split, limit)
      if split == "train":
        eval_q = self.task.questions("eval")[3]
        qs = qs[:5] + [Question("fresh-id", "  " + eval_q.prompt.upper() + " ", eval_q.answer)]
      return qs

  monkeypatch.setattr(posttrain.tasks, "get_task",
                      lambda name, options=None: Leaky(real_get_task(name, options)))
  with pytest.raises(ValueError, match=r"'fresh-id' of task 'arithmetic' .*normalised prompt"):
    posttrain.check_config(config.posttrain, config)


# ---- the stage end to end on a tiny workdir ------------------------------------------------------

RUNG = "cpu-40k@0.5"


@pytest.fixture()
def base_workdir(tmp_path):
  """A ladder workdir with one trained rung (10 steps) and its rungs.jsonl row."""
  helpers.write_tiny_corpus(tmp_path)
  config = _config()
  config.data.train_files = (str(tmp_path / "train.jsonl"),)
  config.data.val_files = (str(tmp_path / "val.jsonl"),)
  config.data.cache_dir = str(tmp_path / "cache")
  config.data.mixture = ()
  config.ladder.rungs = (RUNG, "cpu-60k@0.5")
  config.train.tensorboard = False
  config.eval.tasks = ("arithmetic",)
  config.eval.num_questions = 4
  config.eval.num_samples = 2
  p = config.posttrain
  p.tasks, p.rungs, p.max_train_questions = ("arithmetic",), (RUNG,), 40
  p.epochs, p.batch_size, p.checkpoint_every, p.log_every = 3, 2, 2, 1
  workdir = str(tmp_path / "wd")
  rung = ladder.parse_rungs(config)[0]
  done = train.train(ladder.rung_config(config, rung), ladder.rung_dir(workdir, rung))
  io.write_jsonl(os.path.join(workdir, "rungs.jsonl"), [{
      "schema_version": 1, "model_id": RUNG, "size": "cpu-40k", "N": done["N"], "D": done["D"],
      "tokens_per_param": done["tokens_per_param"], "val_loss": done["val_loss"],
      "train_flops": done["train_flops"], "heldout": False}])
  return config, workdir, rung, done


def _params(config, rung, directory):
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  return train.load_params(ladder.rung_config(config, rung), directory, tokenizer)[1]


def test_stage_resumes_after_an_interruption_and_writes_the_tables(base_workdir, monkeypatch,
                                                                    capsys):
  config, workdir, rung, base = base_workdir
  analysed = []
  monkeypatch.setattr(stages, "run_analysis", lambda s, d, cfg: analysed.append((tuple(s), d)))
  save = checkpoint.Checkpointer.save

  class Killed(Exception):
    pass

  def save_then_die(self, step, state, data_iter):
    save(self, step, state, data_iter)
    if step == 4:
      raise Killed("killed after the step-4 checkpoint")

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_die)
  with pytest.raises(Killed):
    posttrain.run(config, workdir)
  ft_dir = os.path.join(workdir, "posttrain", "ft", "rungs", RUNG)
  assert not os.path.exists(os.path.join(ft_dir, "train_done.json"))
  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  capsys.readouterr()
  posttrain.run(config, workdir)
  out = capsys.readouterr().out
  assert f"[ft 1/1 {RUNG}] resumed from checkpoint at step 4" in out
  assert f"[sft 1/1 {RUNG}] resumed" not in out

  # The resumed run ends where an uninterrupted one does.
  rcfg = ladder.rung_config(config, rung)
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  questions = posttrain.train_questions(config.posttrain, config)["arithmetic"]
  encoded = posttrain.encode_questions(questions, tokenizer)
  examples = [encoded[i] for i in np.random.default_rng(config.seed).permutation(len(encoded))]
  ref_dir = os.path.join(workdir, "reference")
  posttrain.finetune(rcfg, ladder.rung_dir(workdir, rung), ref_dir,
                     *posttrain.pack(examples, "ft", config.data.seq_len, tokenizer.eos_id),
                     tokenizer)
  jax.tree.map(np.testing.assert_array_equal, _params(config, rung, ft_dir),
               _params(config, rung, ref_dir))

  ft_done = io.read_json(os.path.join(ft_dir, "train_done.json"))
  sft_done = io.read_json(os.path.join(workdir, "posttrain", "sft", "rungs", RUNG,
                                       "train_done.json"))
  assert ft_done["steps"] == sft_done["steps"] >= 5
  assert ft_done["loss_tokens_per_epoch"] > 2 * sft_done["loss_tokens_per_epoch"]
  assert ft_done["lr"] == config.train.lr / 10
  for variant, done in (("ft", ft_done), ("sft", sft_done)):
    out_dir = os.path.join(workdir, "posttrain", variant)
    (row,) = io.read_jsonl(os.path.join(out_dir, "rungs.jsonl"))
    assert row["N"] == base["N"] and row["D"] == base["D"] and row["val_loss"] == base["val_loss"]
    assert row["posttrain_tokens"] == done["steps"] * 2 * config.data.seq_len
    assert row["posttrain_flops"] == 6.0 * base["N"] * row["posttrain_tokens"]
    results = list(io.read_jsonl(os.path.join(out_dir, "results.jsonl")))
    assert len(results) == 4 and {r["model_id"] for r in results} == {RUNG}
    assert all(r["n"] == 2 and r["D"] == base["D"] and r["heldout"] is False for r in results)
  assert analysed[-2:] == [(("fit", "plan"), os.path.join(workdir, "posttrain", v))
                           for v in ("ft", "sft")]

  capsys.readouterr()
  posttrain.run(config, workdir)  # everything done: nothing is trained or evaluated again
  out = capsys.readouterr().out
  assert out.count("evaluated already; skipping") == 2 and "fine-tuning N=" not in out

  config.posttrain.epochs = 4
  with pytest.raises(ValueError, match="post-trained with different settings \\(epochs\\)"):
    posttrain.run(config, workdir)


# ---- summary and report section ------------------------------------------------------------------

def _iv(x):
  return {"median": x, "lo": x / 2, "hi": x * 2}


def _entry(n, tpp, chin_n, chin_tpp):
  return {"C": 1e12, "C_inf": 1e6, "N": _iv(n), "D": _iv(n * tpp), "tokens_per_param": _iv(tpp),
          "k": _iv(8.0), "accuracy": _iv(0.4), "feasible_fraction": 1.0,
          "at_grid_edge_fraction": 0.0,
          "training_only": {"N": _iv(chin_n), "tokens_per_param": _iv(chin_tpp)},
          "chinchilla": {"N": _iv(chin_n), "tokens_per_param": _iv(chin_tpp)}}


def _write_planned(directory, entries, rungs=None):
  io.write_json(os.path.join(directory, "plan", "plan.json"),
                {"primary": "approach2", "laws": {"approach2": {"inference": entries}}})
  io.write_json(os.path.join(directory, "fit", "summary.json"), {
      "converged": True, "laws": ["chinchilla", "approach2"],
      "diagnostics": {"approach2": {"rhat_max": 1.01, "ess_min": 300.0, "num_divergences": 0,
                                    "converged": True, "problems": [], "num_chains": 2}}})
  if rungs:
    io.write_jsonl(os.path.join(directory, "rungs.jsonl"), rungs)


def test_summary_and_report_section(tmp_path):
  workdir = str(tmp_path)
  assert posttrain_report.summary(workdir) == {} and posttrain_report.report_section(workdir) == []
  rungs = [{"model_id": "a", "train_flops": 1e12, "posttrain_flops": 1e10},
           {"model_id": "b", "train_flops": 3e12, "posttrain_flops": 3e10}]
  _write_planned(workdir, [_entry(1e3, 500, 4e3, 20), _entry(2e3, 400, 6e3, 20)])
  _write_planned(os.path.join(workdir, "posttrain", "ft"),
                 [_entry(2e3, 300, 4e3, 20), _entry(3e3, 200, 6e3, 20)], rungs)
  _write_planned(os.path.join(workdir, "posttrain", "sft"),
                 [_entry(2e3, 300, 4e3, 20), _entry(8e3, 10, 6e3, 20)], rungs)
  s = posttrain_report.summary(workdir)
  assert set(s) == {"ft", "sft"} and s["ft"]["flops_fraction"] == pytest.approx(0.01)
  assert s["sft"]["plan"][1]["N"]["median"] == 8e3 and s["ft"]["fit"]["converged"]
  assert s["ft"]["fit"]["diagnostics"]["approach2"]["rhat_max"] == 1.01
  assert posttrain_report.shift(s["ft"]["plan"]) == ([True, True], 2.0)
  lines = posttrain_report.report_section(workdir)
  text = "\n".join(lines)
  assert lines[0].startswith("## Post-training")
  assert sum(line.startswith("| 1e+12 | 1e+06 |") for line in lines) == 6
  assert "| FT (whole sequence) | 2e+03 [1e+03, 4e+03] | 300 [150, 600] |" in text
  assert "survives only in part" in text and "SFT at 1 of 2" in text and "FT at 2 of 2" in text
  assert "FT 1.00%" in text
  _write_planned(os.path.join(workdir, "posttrain", "sft"),
                 [_entry(2e3, 300, 4e3, 20), _entry(3e3, 100, 6e3, 20)], rungs)
  assert "shift toward smaller, overtrained models survives fine-tuning" in "\n".join(
      posttrain_report.report_section(workdir))
  _write_planned(workdir, [_entry(5e3, 10, 4e3, 20), _entry(7e3, 10, 6e3, 20)])
  assert "base plan shows no shift" in posttrain_report.report_section(workdir)[-1]
  json.dumps(s)  # JSON-ready for report/summary.json
