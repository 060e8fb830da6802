import csv
import json

import jax
import numpy as np
import pytest

from t2jax import evaluate, io
from t2jax.model import ModelConfig, init_params
from t2jax.sampler import Sampler
from t2jax.tasks import Question, Task, get_task
from t2jax.tokenizer import train_bpe

TEXTS = ["Q: 3+4-1=? A: 6\nThe quick brown fox jumps over the lazy dog.\n\nQuestion: where is "
         "the cat? Answer: on the mat.", "A man, a plan, a canal: Panama! 0123456789"] * 20
SCHEMA = {"schema_version", "model_id", "N", "D", "task", "question_id", "n", "c", "nll",
          "nll_per_token", "gold_tokens", "chance", "guessable", "samples"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tokenizer = train_bpe(TEXTS, 300, str(tmp_path_factory.mktemp("tok") / "tok.json"))
  cfg = ModelConfig(vocab_size=tokenizer.padded_vocab_size, d_model=32, n_layers=2, n_heads=4,
                    d_ff=64, max_seq_len=64)
  return cfg, jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0)), tokenizer


class FixedTask(Task):
  """Given questions; a completion is correct when it equals the gold answer."""
  name = "fixed"
  num_choices = 0
  guessable = False
  stop_strings = ("\n",)
  max_new_tokens = 8

  def __init__(self, questions):
    self._questions = questions

  def questions(self, split="eval", limit=None):
    return self._questions[:limit]

  def verify(self, question, completion):
    return completion == question.answer

  def train_documents(self, seed):
    raise NotImplementedError("evaluation only")


def _config(**overrides):
  cfg = evaluate.default_config()
  cfg.update({"num_samples": 4, **overrides})
  return cfg


def test_greedy_counts_nll_and_schema(setup):
  model_cfg, params, tokenizer = setup
  prompts = ["Q: 3+4=? A:", "Where is the cat?\nA. mat\nB. fox\nAnswer:"]
  sampler = Sampler(model_cfg, params, tokenizer)
  greedy = sampler.generate(prompts, 4, key=jax.random.key(0), max_new_tokens=8,
                            temperature=0.0)
  assert greedy[0][0], "the test needs a non-empty greedy completion"
  assert greedy[1][0] != " A", "the multiple-choice question needs a wrong greedy answer"
  # Multiple choice: the recorded NLL is that of the gold letter, the answer the prompt asks for.
  task = FixedTask([Question("a", prompts[0], greedy[0][0]),
                    Question("b", prompts[1], " A", choices=("mat", "fox"))])
  rows = evaluate.evaluate(model_cfg, params, tokenizer, [task], _config(temperature=0.0),
                           model_id="tiny", N=123.0, D=456.0)
  assert [set(r) for r in rows] == [SCHEMA, SCHEMA]
  assert [r["question_id"] for r in rows] == ["a", "b"]
  assert [r["c"] for r in rows] == [4, 0]  # greedy: all 4 samples are the greedy completion
  assert rows[0]["samples"] == [greedy[0][0]] * 3
  nll, count = sampler.score(prompts, [greedy[0][0], " A"])
  for row, want_nll, want_count in zip(rows, nll, count):
    assert (row["n"], row["N"], row["D"], row["task"]) == (4, 123.0, 456.0, "fixed")
    assert (row["chance"], row["guessable"]) == (0.0, False)
    np.testing.assert_allclose(row["nll"], want_nll, rtol=1e-6)
    assert row["gold_tokens"] == want_count
    np.testing.assert_allclose(row["nll_per_token"], want_nll / want_count, rtol=1e-6)
  # A lettered task: a guesser passes 1/num_choices, so the rows say so for the fit.
  lettered = FixedTask(task.questions()[1:])
  lettered.num_choices, lettered.guessable = 2, True
  rows = evaluate.evaluate(model_cfg, params, tokenizer, [lettered],
                           _config(temperature=0.0, num_samples=1), model_id="tiny", N=1.0, D=2.0)
  assert [(r["chance"], r["guessable"]) for r in rows] == [(0.5, True)]


def test_samples_do_not_depend_on_batching_or_question_count(setup, capsys):
  model_cfg, params, tokenizer = setup
  arithmetic = get_task("arithmetic")
  run = lambda **kw: evaluate.evaluate(model_cfg, params, tokenizer, [arithmetic],  # noqa: E731
                                       _config(keep_samples=4, **kw), model_id="m", N=1, D=1)
  rows = run(num_questions=3)
  assert "[eval m] arithmetic: questions 3/3  tokens " in capsys.readouterr().out
  assert len(rows) == 3 and all(0 <= r["c"] <= 4 and len(r["samples"]) == 4 for r in rows)
  assert len({s for r in rows for s in r["samples"]}) > 3  # sampled, not all alike
  fewer_one_by_one = run(num_questions=2, question_batch=1, k_chunk=2)
  assert [r["samples"] for r in fewer_one_by_one] == [r["samples"] for r in rows[:2]]


def _row(c, nll=1.0, n=4, model_id="m", task="t"):
  return {"model_id": model_id, "task": task, "n": n, "c": c, "nll": nll, "N": 1, "D": 2}


def test_passk_table_exact_values():
  rows = [_row(0, nll=0.0), _row(1, nll=np.log(2)), _row(2, nll=np.log(4)), _row(4, nll=np.log(4))]
  rows += [_row(3, model_id="other")]
  table = evaluate.passk_table(rows, resamples=500)
  ours = [t for t in table if t["model_id"] == "m"]
  assert [t["k"] for t in ours] == [1, 2, 4]
  # pass@2 per question: 1 - C(4-c, 2)/C(4, 2) = 0, 1/2, 5/6, 1
  np.testing.assert_allclose([t["pass_at_k"] for t in ours],
                             [7 / 16, (0.5 + 5 / 6 + 1) / 4, 3 / 4])
  np.testing.assert_allclose(ours[0]["p_gold"], (1 + 1 / 2 + 1 / 4 + 1 / 4) / 4)
  for t in ours:
    assert t["pass_at_k_low"] <= t["pass_at_k"] <= t["pass_at_k_high"]
    assert t["questions"] == 4
  other = [t for t in table if t["model_id"] == "other"]
  assert [(t["k"], t["pass_at_k_low"], t["pass_at_k_high"]) for t in other] == [
      (1, 0.75, 0.75), (2, 1.0, 1.0), (4, 1.0, 1.0)]  # one question: the interval is a point


def test_passk_interval_matches_normal_approximation():
  rng = np.random.default_rng(0)
  c = rng.binomial(8, rng.uniform(0, 1, 400))
  table = evaluate.passk_table([_row(int(ci), n=8) for ci in c], ks=[1], resamples=4000)
  values = c / 8
  half = 1.645 * values.std() / np.sqrt(len(values))
  width = (table[0]["pass_at_k_high"] - table[0]["pass_at_k_low"]) / 2
  np.testing.assert_allclose(width, half, rtol=0.1)


def test_passk_table_rejects_k_above_n():
  with pytest.raises(ValueError, match="k=8"):
    evaluate.passk_table([_row(1)], ks=[8])


def test_write_results_jsonl_and_csv(tmp_path):
  rows = [{**_row(1), "question_id": "q1", "samples": ["a,b", "c\n"]},
          {**_row(0), "question_id": "q2", "samples": []}]
  jsonl, csv_path = evaluate.write_results(str(tmp_path / "results.jsonl"), rows)
  assert list(io.read_jsonl(jsonl)) == rows
  with open(csv_path, newline="") as f:
    back = list(csv.DictReader(f))
  assert [r["question_id"] for r in back] == ["q1", "q2"]
  assert json.loads(back[0]["samples"]) == ["a,b", "c\n"]
  with pytest.raises(ValueError, match=".jsonl"):
    evaluate.write_results(str(tmp_path / "results.csv"), rows)
