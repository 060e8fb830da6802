"""Task registry and synthetic tasks: interface, determinism, disjoint splits, correct answers."""

import collections
import importlib.util
import itertools
import re

import pytest

from t2jax import tasks
from t2jax.tasks import arithmetic, base, causal, recall, verifiers

SYNTHETIC = tasks.SYNTHETIC_TASKS


def _docs(task, seed, count):
  return list(itertools.islice(task.train_documents(seed), count))


def _lines(docs):
  return [line for d in docs for line in d.splitlines()]


def test_registry_names_and_config():
  assert tasks.task_names() == list(SYNTHETIC) + list(tasks.REAL_TASKS)
  cfg = tasks.default_config()
  assert sorted(cfg.keys()) == sorted(tasks.task_names())
  assert cfg.arithmetic.num_eval == 500 and cfg.sciq.path == "data/eval/sciq/test.jsonl"


def test_get_task_rejects_bad_names_and_options():
  with pytest.raises(ValueError, match="unknown task 'nope'"):
    tasks.get_task("nope")
  with pytest.raises(ValueError, match="unknown option 'max_operand'.*max_operands"):
    tasks.get_task("arithmetic", {"max_operand": 3})
  with pytest.raises(ValueError, match=r"tasks.arithmetic.max_value='9': wrong type"):
    tasks.get_task("arithmetic", {"max_value": "9"})


@pytest.mark.parametrize("name, options, match", [
    ("arithmetic", {"operators": "+/"}, "operators"),
    ("arithmetic", {"min_operands": 3, "max_operands": 2}, "min_operands"),
    ("arithmetic", {"eval_fraction": 1.0}, "eval_fraction"),
    ("spatial", {"grid_size": 3, "max_step": 3}, "grid_size"),
    ("causal", {"max_steps": 9}, "max_steps"),
    ("recall", {"num_eval": 2000}, "num_eval"),
    ("recall", {"qa_fraction": 0.0}, "qa_fraction"),
])
def test_invalid_knobs_raise(name, options, match):
  with pytest.raises(ValueError, match=match):
    tasks.get_task(name, options)


def test_too_small_problem_space_raises():
  task = tasks.get_task("arithmetic", {"max_operands": 2, "max_value": 3, "num_eval": 50})
  with pytest.raises(ValueError, match="problem space is too small.*num_eval=50"):
    task.questions()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_interface_and_fixed_eval_set(name):
  task = tasks.get_task(name)
  assert task.num_choices == 0 and task.stop_strings == ("\n",) and task.max_new_tokens > 0
  qs = task.questions()
  assert len(qs) == 500 and len({q.id for q in qs}) == 500
  assert qs == tasks.get_task(name).questions(), "eval set must not depend on the instance"
  assert task.questions(limit=7) == qs[:7]
  for q in qs:
    assert q.prompt.startswith("Q: ") and q.prompt.endswith(" A:"), q
    assert q.answer.startswith(" ") and not q.answer[1:].startswith(" ") and "\n" not in q.answer
    assert task.verify(q, q.answer) and not task.verify(q, "")
  with pytest.raises(ValueError, match="split='test'"):
    task.questions("test")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_train_and_eval_never_overlap(name):
  task = tasks.get_task(name)
  eval_qs = task.questions("eval")
  eval_lines = {q.prompt + q.answer for q in eval_qs}
  eval_prompts = {q.prompt for q in eval_qs}
  train_qs = task.questions("train")
  assert len(train_qs) >= 500 and task.splits == ("train", "eval") and not task.guessable
  assert not {q.id for q in eval_qs} & {q.id for q in train_qs}
  normalized = {verifiers.normalize_answer(q.prompt) for q in eval_qs}
  assert not normalized & {verifiers.normalize_answer(q.prompt) for q in train_qs}
  assert all(task.verify(q, q.answer) for q in train_qs)
  lines = _lines(_docs(task, 0, 1500) + _docs(task, 1, 1500))
  question_lines = [line for line in lines if line.startswith("Q: ")]
  assert len(question_lines) > 1000
  assert not eval_lines & set(question_lines)
  assert not any(line.split(" A:")[0] + " A:" in eval_prompts for line in question_lines)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_no_fixed_answer_passes_many_questions(name):
  """The commonest gold answer, given to every question, passes < 10% (arithmetic 5.6%, spatial
  2.0%, causal 0.4%, recall 3.4%; recall's commonest value per attribute passes 12.6%)."""
  task = tasks.get_task(name)
  qs = task.questions()
  commonest = collections.Counter(q.answer for q in qs).most_common(1)[0][0]
  assert sum(task.verify(q, commonest) for q in qs) / len(qs) < 0.1
  assert all(not task.verify(q, guess) for q in qs for guess in (" A", " yes", " no"))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_train_documents_are_seeded_and_formatted(name):
  task = tasks.get_task(name)
  docs = _docs(task, 3, 50)
  assert docs == _docs(tasks.get_task(name), 3, 50)
  assert docs != _docs(task, 4, 50)
  assert all(d.endswith("\n") for d in docs)
  for line in _lines(docs):
    if line.startswith("Q: "):
      prompt, answer = line.split(" A:")
      q = base.Question(id="x", prompt=prompt + " A:", answer=answer)
      assert task.verify(q, answer), line  # training lines carry correct answers
      if name != "recall":
        assert task.split_of(_key(name, q.prompt)) == "train"


def _key(name, prompt):
  body = prompt[len("Q: "):-len(" A:")]
  if name == "arithmetic":
    return body[:-2]
  if name == "spatial":
    return body[len("at "):-1].replace(" go ", " ", 1)
  steps = body.count(", then")
  return body.split(",")[0] + f"|{steps}"


def test_arithmetic_answers_match_python_eval():
  task = tasks.get_task("arithmetic", {"operators": "+-*", "max_operands": 4, "max_value": 20})
  qs = task.questions(limit=300)
  for q in qs:
    expression = re.fullmatch(r"Q: ([\d+*-]+)=\? A:", q.prompt).group(1)
    assert int(q.answer) == eval(expression), q  # pylint: disable=eval-used
  operand_counts = {len(re.findall(r"\d+", q.prompt)) for q in qs}
  assert operand_counts == {2, 3, 4}
  assert arithmetic.evaluate([2, 3, 4], "+*") == 14 and arithmetic.evaluate([7, 2, 3], "-*") == 1


def test_spatial_answers_by_walking_the_grid():
  task = tasks.get_task("spatial", {"grid_size": 6, "max_moves": 3})
  steps = {"up": (0, 1), "down": (0, -1), "left": (-1, 0), "right": (1, 0)}
  for q in task.questions(limit=300):
    m = re.fullmatch(r"Q: at \((\d+),(\d+)\) go (.*)\? A:", q.prompt)
    x, y = int(m.group(1)), int(m.group(2))
    for move in m.group(3).split(", "):
      direction, n = move.split()
      x, y = x + steps[direction][0] * int(n), y + steps[direction][1] * int(n)
      assert 0 <= x < 6 and 0 <= y < 6, q
    assert q.answer == f" ({x},{y})"


def test_causal_answers_follow_the_chains():
  nxt = {}
  for chain in causal.CHAINS:
    nxt.update(zip(chain, chain[1:]))
  assert len(nxt) == sum(len(c) - 1 for c in causal.CHAINS), "every event has one effect"
  task = tasks.get_task("causal", {"max_causes": 3, "max_steps": 3})
  for q in task.questions():
    body = q.prompt[len("Q: "):-len("? A:")]
    steps = body.count(", then")
    effects = []
    for event in body.split(",")[0].split(" and "):
      for _ in range(steps):
        event = nxt[event]
      effects.append(event)
    assert q.answer == " " + " and ".join(effects)


def test_recall_design():
  task = tasks.get_task("recall")
  eval_names = {task.world[p][0] for p in task.eval_people}
  train_names = {task.world[p][0] for p in task.train_people}
  assert len(eval_names) == 125 and not eval_names & train_names
  assert len({name for name, _ in task.world}) == 250
  eval_qs = task.questions()
  assert {q.id.split("/")[0] for q in eval_qs} == eval_names  # 125 people x 4 attributes
  docs = _docs(task, 0, 6000)
  bios = [d for d in docs if not d.startswith("Q: ")]
  qa_lines = [line for d in docs if d.startswith("Q: ") for line in d.splitlines()]
  assert 0.4 < len(qa_lines) / 4 / len(docs) < 0.6
  # Questions are asked only about train people, in a phrasing no biography uses.
  assert all(any(n in line for n in train_names) for line in qa_lines[:500])
  assert not {q.prompt for q in eval_qs} & {line.split(" A:")[0] + " A:" for line in qa_lines}
  assert not any("Q:" in b or "?" in b for b in bios)
  # Every fact about an eval person is stated in the biographies, in several phrasings.
  name, values = task.world[task.eval_people[0]]
  mine = [b for b in bios if name in b]
  assert len(mine) >= 3 and all(v in b for b in mine for v in values.values())
  city_phrasings = {p for p in recall.STATEMENTS["city"] for b in mine
                    if p.format(n=name, v=values["city"]) in b}
  assert len(city_phrasings) >= 2
  for q in eval_qs[:50]:
    person, attribute = q.id.split("/")
    assert q.answer == " " + dict(task.world)[person][attribute]


def test_difficulty_knobs_change_the_questions():
  easy = tasks.get_task("arithmetic").questions()
  hard = tasks.get_task("arithmetic", {"min_operands": 4, "max_operands": 5, "max_value": 99})
  assert max(len(q.prompt) for q in easy) < min(len(q.prompt) for q in hard.questions())
  one = tasks.get_task("causal", {"max_causes": 1, "max_steps": 1, "num_eval": 9})
  assert all(" and " not in q.prompt and q.prompt.count("then") == 1 for q in one.questions())


def test_stable_rng_and_hash():
  # The first eval question is pinned: eval sets must not change across processes or versions.
  assert base.stable_hash("arithmetic", 0, "3+4") == base.stable_hash("arithmetic", 0, "3+4")
  assert base.stable_hash("a", "b") != base.stable_hash("ab")
  rng = base.Rng("seed")
  draws = [rng.integer(1, 6) for _ in range(6000)]
  assert set(draws) == set(range(1, 7)) and abs(sum(draws) / 6000 - 3.5) < 0.1
  assert sorted(base.Rng(1).shuffled(range(10))) == list(range(10))
  assert tasks.get_task("arithmetic").questions(limit=3)[0].id == "4-5-3"


def test_seqio_bridge_needs_seqio():
  from t2jax.tasks import seqio_bridge  # importable without seqio
  if importlib.util.find_spec("seqio") is not None:
    pytest.skip("seqio is installed; test_seqio_pipeline covers it")
  with pytest.raises(ImportError, match=r"pip install -e \.\[seqio\]"):
    seqio_bridge.register_seqio_tasks(["arithmetic"], vocabulary=None)


def test_seqio_pipeline():
  """What a seqio user runs: registration, tokenized train and validation splits, packing, and the
  verifier as the metric through seqio.Evaluator (a byte vocabulary: no downloads)."""
  seqio = pytest.importorskip("seqio")
  from t2jax.tasks import seqio_bridge  # pylint: disable=g-import-not-at-top
  vocab = seqio.ByteVocabulary()
  names = seqio_bridge.register_seqio_tasks(["arithmetic", "sciq", "lambada"], vocab)
  assert names == ["t2jax_arithmetic", "t2jax_sciq", "t2jax_lambada"]
  sciq = seqio.get_mixture_or_task("t2jax_sciq")
  assert sciq.splits == ("train", "validation")
  assert seqio.get_mixture_or_task("t2jax_lambada").splits == ("validation",)
  lengths = {"inputs": 256, "targets": 32}
  first = next(sciq.get_dataset(lengths, "validation", shuffle=False).as_numpy_iterator())
  assert first["id"] == b"idx0" and first["targets_pretokenized"] == b" oxidants"
  assert vocab.decode(first["targets"].tolist()) == " oxidants"
  assert first["targets"][-1] == vocab.eos_id and first["inputs_pretokenized"].endswith(b"Answer:")
  train = list(sciq.get_dataset(lengths, "train", shuffle=False).take(3).as_numpy_iterator())
  assert [ex["id"] for ex in train] == [b"train/idx0", b"train/idx1", b"train/idx2"]
  packed = seqio.PrefixLMFeatureConverter(pack=True)(
      seqio.get_mixture_or_task("t2jax_arithmetic").get_dataset(
          {"inputs": 64, "targets": 64}, "train", shuffle=False), {"inputs": 64, "targets": 64})
  batch = next(packed.as_numpy_iterator())
  assert batch["decoder_target_tokens"].shape == (128,) and batch["decoder_segment_ids"].max() > 1

  def predict(answers):
    """A model that answers question i with answers(i, gold tokens), padded as decoders do."""
    def predict_fn(ds, model_feature_shapes=None):
      del model_feature_shapes
      out = []
      for i, ex in ds.as_numpy_iterator():
        gold = ex["decoder_target_tokens"][ex["decoder_loss_weights"] > 0].tolist()
        tokens = answers(i, gold) + [vocab.eos_id]
        out.append((i, tokens + [0] * (40 - len(tokens))))
      return out
    return predict_fn

  for name in ("t2jax_sciq", "t2jax_arithmetic"):  # 1000 and 500 questions
    evaluator = seqio.Evaluator(name, seqio.PrefixLMFeatureConverter(pack=False),
                                async_compute_metrics=False)
    every_other = predict(lambda i, gold: gold if i % 2 == 0 else vocab.encode(" 12345"))
    metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=every_other)
    assert metrics.result()[name]["accuracy"] == pytest.approx(0.5)
    guess = predict(lambda i, gold: vocab.encode(" B"))
    metrics, _ = evaluator.evaluate(compute_metrics=True, predict_fn=guess)
    assert metrics.result()[name]["accuracy"] < 0.1
