"""Real eval sets: the shipped files load with correct gold answers; bad files fail clearly."""

import collections
import json
import os

import pytest

from t2jax import io, tasks
from t2jax.tasks import verifiers

COUNTS = {"arc_easy": 2376, "arc_challenge": 1172, "sciq": 1000, "openbookqa": 500, "gsm8k": 1319,
          "simple_arithmetic": 1000, "lambada": 5153}
# Train rows kept after dropping those whose normalized stem occurs in the eval split.
TRAIN_COUNTS = {"arc_easy": (2251, 2243), "arc_challenge": (1119, 1113), "sciq": (11679, 11665),
                "openbookqa": (4957, 4933)}
MC = tasks.MULTIPLE_CHOICE_TASKS


def _norm_prompt(q):
  return verifiers.normalize_answer(q.prompt)


@pytest.mark.parametrize("name", tasks.REAL_TASKS)
def test_shipped_files_load(name):
  task = tasks.get_task(name)
  qs = task.questions()
  assert len(qs) == COUNTS[name] and len({q.id for q in qs}) == len(qs)
  assert task.questions(limit=5) == qs[:5]
  assert all(task.verify(q, q.answer) for q in qs)
  assert all(q.answer.strip() and not q.prompt.endswith(" ") for q in qs)
  spaced = sum(q.answer.startswith(" ") for q in qs)
  assert spaced == (5146 if name == "lambada" else len(qs))
  assert not task.guessable and task.num_choices == 0
  with pytest.raises(ValueError, match="not a source of pretraining documents"):
    next(task.train_documents(0))


@pytest.mark.parametrize("name", MC)
def test_train_split_is_disjoint_from_eval(name):
  task = tasks.get_task(name)
  assert task.splits == ("train", "eval")
  train, evals = task.questions("train"), task.questions("eval")
  raw, kept = TRAIN_COUNTS[name]
  assert len(train) == kept and len({q.id for q in train}) == kept
  assert raw == sum(1 for _ in io.read_jsonl(task.train_path))
  assert all(q.id.startswith("train/") and task.verify(q, q.answer) for q in train)
  assert not {q.id for q in train} & {q.id for q in evals}
  assert not {_norm_prompt(q) for q in train} & {_norm_prompt(q) for q in evals}
  assert task.questions("train", limit=3) == train[:3]
  if name != "sciq":  # the SciQ train file has no choices
    lettered = tasks.get_task(name, {"format": "letters"})
    letter_train = lettered.questions("train")
    assert [q.id for q in letter_train] == [q.id for q in train]
    stems = {q.prompt.split("\n")[0] for q in lettered.questions()}
    assert not stems & {q.prompt.split("\n")[0] for q in letter_train}


def test_sciq_train_drops_the_test_questions():
  test_stems = {row["question"] for row in io.read_jsonl(os.path.join(
      io.REPO_ROOT, "data/eval/sciq/test.jsonl"))}
  rows = list(io.read_jsonl(os.path.join(io.REPO_ROOT, "data/eval/sciq/train.jsonl")))
  assert sum(row["question"] in test_stems for row in rows) == 7  # 14 once normalized
  train = tasks.get_task("sciq").questions("train")
  assert not test_stems & {q.prompt[len("Question: "):-len("\nAnswer:")] for q in train}
  with pytest.raises(ValueError, match="task 'sciq' has no train split: .*format='cloze'"):
    tasks.get_task("sciq", {"format": "letters"}).questions("train")


@pytest.mark.parametrize("name", ["gsm8k", "simple_arithmetic", "lambada"])
def test_tasks_without_a_train_split_raise(name):
  task = tasks.get_task(name)
  assert task.splits == ("eval",)
  with pytest.raises(ValueError, match=f"task '{name}' has no train split"):
    task.questions("train")
  with pytest.raises(ValueError, match="split='test'"):
    task.questions("test")


@pytest.mark.parametrize("name", MC)
def test_cloze_form_cannot_be_passed_by_guessing(name):
  """A fixed letter, a fixed answer text (the commonest gold answer, or the first question's first
  choice) passes < 10% of the cloze questions; the lettered form passes ~25% with one letter."""
  cloze, lettered = tasks.get_task(name), tasks.get_task(name, {"format": "letters"})
  qs, letter_qs = cloze.questions(), lettered.questions()
  assert [q.id for q in qs] == [q.id for q in letter_qs]
  commonest = collections.Counter(verifiers.normalize_answer(q.answer) for q in qs).most_common(1)
  guesses = [" " + g for g in "ABCDE"] + [" " + commonest[0][0], " " + letter_qs[0].choices[0]]
  for guess in guesses:
    rate = sum(cloze.verify(q, guess) for q in qs) / len(qs)
    assert rate < 0.1, (guess, rate)
  # The choices are not in the cloze prompt, so the per-question choice texts are no guess.
  assert all(not q.choices and "\nA. " not in q.prompt for q in qs)
  assert not cloze.guessable and cloze.num_choices == 0
  assert lettered.guessable and lettered.num_choices == 4
  assert max(sum(lettered.verify(q, " " + g) for q in letter_qs) / len(qs) for g in "ABCD") > 0.2
  for q, lq in zip(qs, letter_qs):
    assert q.answer == " " + lq.choices["ABCDE".index(lq.answer.strip())]


@pytest.mark.parametrize("name, options", [(n, None) for n in tasks.REAL_TASKS]
                         + [(n, {"format": "letters"}) for n in MC])
def test_guessable_is_truthful(name, options):
  """`guessable` says whether a fixed answer (a letter, or the commonest gold answer) passes
  >= 10% of the questions; `num_choices` is 0 exactly when it does not."""
  task = tasks.get_task(name, options)
  qs = task.questions()
  commonest = collections.Counter(q.answer for q in qs).most_common(1)[0][0]
  best = max(sum(task.verify(q, g) for q in qs) / len(qs)
             for g in [commonest] + [" " + letter for letter in "ABCDE"])
  assert task.guessable == (best >= 0.1), best
  assert (task.num_choices > 0) == task.guessable


def test_format_option_is_checked():
  with pytest.raises(ValueError, match=r"tasks.arc_easy.format='mc': use 'cloze'.*'letters'"):
    tasks.get_task("arc_easy", {"format": "mc"})
  assert tasks.default_config().sciq.format == "cloze"


@pytest.mark.parametrize("name, file", [("arc_easy", "ARC-Easy-Test.jsonl"),
                                        ("arc_challenge", "ARC-Challenge-Test.jsonl")])
def test_arc_labels_map_to_letters(name, file):
  """Gold letters re-derived independently from the raw file, numeric labels included."""
  qs = {q.id: q for q in tasks.get_task(name, {"format": "letters"}).questions()}
  cloze = {q.id: q for q in tasks.get_task(name).questions()}
  numeric = 0
  with open(os.path.join(io.REPO_ROOT, "data/eval/arc", file), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      labels = [c["label"] for c in row["question"]["choices"]]
      numeric += labels[0] == "1"
      q = qs[row["id"]]
      assert q.answer == " " + "ABCDE"[labels.index(row["answerKey"])]
      assert q.choices == tuple(c["text"].strip() for c in row["question"]["choices"])
      assert q.prompt.endswith("\nAnswer:") and f"\n{'ABCDE'[len(labels) - 1]}. " in q.prompt
      gold = row["question"]["choices"][labels.index(row["answerKey"])]["text"]
      assert cloze[row["id"]].answer == " " + gold.strip()
  assert numeric == {"arc_easy": 97, "arc_challenge": 22}[name]
  if name == "arc_challenge":
    assert {"llmfoundry_arc_challenge_row59", "llmfoundry_arc_challenge_row88"} <= set(qs)


def test_multiple_choice_prompt_formats():
  q = tasks.get_task("openbookqa", {"format": "letters"}).questions(limit=3)[2]
  assert q.prompt == "Question: Predators eat\nA. lions\nB. humans\nC. bunnies\nD. grass\nAnswer:"
  assert q.answer == " C" and q.choices == ("lions", "humans", "bunnies", "grass")
  cloze = tasks.get_task("openbookqa").questions(limit=3)[2]
  assert (cloze.id, cloze.prompt, cloze.answer, cloze.choices) == (
      q.id, "Question: Predators eat\nAnswer:", " bunnies", ())
  sciq = tasks.get_task("sciq", {"format": "letters"}).questions(limit=1)[0]
  assert sciq.id == "idx0" and sciq.answer == " D" and sciq.choices[3] == "oxidants"
  assert tasks.get_task("sciq").questions(limit=1)[0].answer == " oxidants"


def test_lambada_splits_off_the_last_word():
  task = tasks.get_task("lambada")
  texts = [row["text"] for row in io.read_jsonl(task.path)]
  qs = task.questions()
  assert [q.prompt + q.answer for q in qs] == texts
  assert all(len(q.answer.split()) == 1 for q in qs)
  broken = [q for q in qs if not q.answer.startswith(" ")]
  assert len(broken) == 7 and all(q.prompt.endswith("\n") for q in broken)
  q = qs[0]
  assert q.answer == " signs" and q.prompt.endswith("grin, I don't care about")
  quoted = next(q for q in qs if q.answer == ' "Nadia')
  assert task.verify(quoted, " Nadia") and task.verify(quoted, ' "Nadia," she')
  assert task.max_new_tokens >= 8 and task.stop_strings == ("\n",)


def test_gsm8k_and_simple_arithmetic_format():
  q = tasks.get_task("gsm8k").questions(limit=1)[0]
  assert q.prompt.startswith("Question: Janet") and q.prompt.endswith("market?\nAnswer:")
  assert "<<" not in q.answer and q.answer.endswith("\n#### 18")
  arith = tasks.get_task("simple_arithmetic").questions(limit=1)[0]
  assert (arith.prompt, arith.answer) == ("Q: 25-759=? A:", " -734")
  raw = tasks.get_task("simple_arithmetic", {
      "path": "data/eval/arithmetic/simple_arithmetic_withspaces.jsonl", "template": "{context}"})
  assert (raw.questions()[0].prompt, raw.questions()[0].answer) == ("25 - 759 =", " -734")
  with pytest.raises(ValueError, match="template"):
    tasks.get_task("simple_arithmetic", {"template": "Q: {ctx}"})


ARC_ROW = {"id": "q1", "question": {"stem": "Which?", "choices": [
    {"text": "one", "label": "1"}, {"text": "two", "label": "2"}, {"text": "three", "label": "3"}]},
           "answerKey": "3"}


def _write(tmp_path, rows):
  path = tmp_path / "bad.jsonl"
  path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
  return str(path)


def _arc(**changes):
  row = json.loads(json.dumps(ARC_ROW))
  row.update(changes)
  return row


def test_arc_numeric_labels_from_a_custom_path(tmp_path):
  task = tasks.get_task("arc_easy", {"path": _write(tmp_path, [ARC_ROW]), "format": "letters"})
  (q,) = task.questions()
  assert q.prompt == "Question: Which?\nA. one\nB. two\nC. three\nAnswer:" and q.answer == " C"
  assert task.verify(q, "C") and task.verify(q, "three") and not task.verify(q, "3")


@pytest.mark.parametrize("name, rows, match", [
    ("arc_easy", [ARC_ROW, _arc(id="q2", answerKey="E")], r"bad.jsonl:2: field 'answerKey' is 'E'"),
    ("arc_easy", [_arc(answerKey=None)], r"bad.jsonl:1: field 'answerKey' is None"),
    ("arc_easy", [{"id": "q", "answerKey": "A"}], r":1: field 'question.stem' is missing"),
    ("arc_easy", [_arc(question={"stem": "s", "choices": [{"text": "a"}, {"text": "b"}]})],
     r"'question.choices\[0\].label' is missing"),
    ("arc_easy", [ARC_ROW, ARC_ROW], r":2: field 'id' repeats 'q1' from line 1"),
    ("openbookqa", [{"query": "q", "choices": ["a", "b", "c", "d"], "gold": 4}],
     r":1: field 'gold' is 4, outside 0..3"),
    ("openbookqa", [{"query": "q", "choices": ["a", "b"], "gold": -1}], r"field 'gold' is -1"),
    ("openbookqa", [{"query": "q", "choices": ["a", "b"], "gold": True}], r"field 'gold' is True"),
    ("openbookqa", [{"choices": ["a", "b"], "gold": 0}], r"field 'query' is missing"),
    ("openbookqa", [{"query": "q", "choices": ["a", ""], "gold": 0}], r"field 'choices'"),
    ("sciq", [{"idx": 0, "question": "q", "choices": ["a", "b"], "gold": 1, "correct_answer": "a"}],
     r"field 'gold' is 1, which picks 'b', but correct_answer is 'a'"),
    ("gsm8k", [{"question": "q", "answer": "it is 4"}], r"field 'answer' has no final number"),
    ("simple_arithmetic", [{"context": "1+1=", "continuation": "two"}], r"'continuation' is 'two'"),
    ("sciq", ["{not json\n"], r"bad.jsonl:1: not valid JSON"),
    ("sciq", [], r"has no rows"),
])
def test_bad_files_name_file_line_and_field(tmp_path, name, rows, match):
  task = tasks.get_task(name, {"path": _write(tmp_path, rows)})
  with pytest.raises(ValueError, match=match):
    task.questions()


def test_missing_file_and_path_resolution(tmp_path):
  with pytest.raises(ValueError, match=r"does not exist; set tasks.sciq.path"):
    tasks.get_task("sciq", {"path": str(tmp_path / "none.jsonl")}).questions()
  with pytest.raises(ValueError, match=r"train file .*none.jsonl does not exist; set "
                     r"tasks.openbookqa.train_path"):
    tasks.get_task("openbookqa", {"train_path": str(tmp_path / "none.jsonl")}).questions("train")
  assert tasks.get_task("sciq").path == os.path.join(io.REPO_ROOT, "data/eval/sciq/test.jsonl")
  assert io.resolve_path("/abs/x.jsonl") == "/abs/x.jsonl"
  assert os.path.isfile(os.path.join(io.REPO_ROOT, "t2jax", "tasks", "base.py"))
