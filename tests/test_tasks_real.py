"""Real eval sets: the shipped files load with correct gold answers; bad files fail clearly."""

import json
import os

import pytest

from t2jax import io, tasks

COUNTS = {"arc_easy": 2376, "arc_challenge": 1172, "sciq": 1000, "openbookqa": 500, "gsm8k": 1319,
          "simple_arithmetic": 1000}


@pytest.mark.parametrize("name", tasks.REAL_TASKS)
def test_shipped_files_load(name):
  task = tasks.get_task(name)
  qs = task.questions()
  assert len(qs) == COUNTS[name] and len({q.id for q in qs}) == len(qs)
  assert task.questions(limit=5) == qs[:5]
  assert all(task.verify(q, q.answer) for q in qs)
  assert all(q.answer.startswith(" ") and not q.prompt.endswith(" ") for q in qs)
  with pytest.raises(ValueError, match="split='train'"):
    task.questions("train")
  with pytest.raises(ValueError, match="no training documents"):
    next(task.train_documents(0))


@pytest.mark.parametrize("name, file", [("arc_easy", "ARC-Easy-Test.jsonl"),
                                        ("arc_challenge", "ARC-Challenge-Test.jsonl")])
def test_arc_labels_map_to_letters(name, file):
  """Gold letters re-derived independently from the raw file, numeric labels included."""
  qs = {q.id: q for q in tasks.get_task(name).questions()}
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
  assert numeric == {"arc_easy": 97, "arc_challenge": 22}[name]
  if name == "arc_challenge":
    assert {"llmfoundry_arc_challenge_row59", "llmfoundry_arc_challenge_row88"} <= set(qs)


def test_multiple_choice_prompt_format():
  q = tasks.get_task("openbookqa").questions(limit=3)[2]
  assert q.prompt == "Question: Predators eat\nA. lions\nB. humans\nC. bunnies\nD. grass\nAnswer:"
  assert q.answer == " C" and q.choices == ("lions", "humans", "bunnies", "grass")
  sciq = tasks.get_task("sciq").questions(limit=1)[0]
  assert sciq.id == "idx0" and sciq.answer == " D" and sciq.choices[3] == "oxidants"


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
  task = tasks.get_task("arc_easy", {"path": _write(tmp_path, [ARC_ROW])})
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
  assert tasks.get_task("sciq").path == os.path.join(io.REPO_ROOT, "data/eval/sciq/test.jsonl")
  assert io.resolve_path("/abs/x.jsonl") == "/abs/x.jsonl"
  assert os.path.isfile(os.path.join(io.REPO_ROOT, "t2jax", "tasks", "base.py"))
