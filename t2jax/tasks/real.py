"""Real evaluation sets read from the shipped files (`data/eval/`): eval split only.

Multiple-choice sets (ARC-Easy, ARC-Challenge, SciQ, OpenBookQA) are asked generatively:

    Question: <stem>
    A. <choice>
    B. <choice>
    Answer:

with the gold answer " B". Letters follow the order of the choices in the file; ARC items labelled
"1"-"5" are shown as "A"-"E" and their answer key is mapped through the label's position, never
read as an index. GSM8K asks "Question: ...\\nAnswer:" and is judged on the number after "####";
simple arithmetic (llm-foundry) is asked in the synthetic arithmetic format "Q: 25-759=? A:".
Every reader checks each row and names the file, line and field of the first bad one.
"""

import abc
import re
from typing import Any, Iterator

import ml_collections

from t2jax import io
from t2jax.tasks import base, verifiers

_CALCULATOR = re.compile(r"<<[^<>]*>>")


def default_configs() -> dict[str, ml_collections.ConfigDict]:
  """Paths are relative to the repository root unless absolute."""
  return {
      "arc_easy": ml_collections.ConfigDict(dict(path="data/eval/arc/ARC-Easy-Test.jsonl")),
      "arc_challenge": ml_collections.ConfigDict(
          dict(path="data/eval/arc/ARC-Challenge-Test.jsonl")),
      "sciq": ml_collections.ConfigDict(dict(path="data/eval/sciq/test.jsonl")),
      "openbookqa": ml_collections.ConfigDict(dict(path="data/eval/openbookqa/test.jsonl")),
      "gsm8k": ml_collections.ConfigDict(dict(path="data/eval/gsm8k/test.jsonl")),
      "simple_arithmetic": ml_collections.ConfigDict(dict(
          path="data/eval/arithmetic/simple_arithmetic_nospaces.jsonl",
          template="Q: {context}? A:",  # "{context}" alone gives llm-foundry's own format
      )),
  }


class RowError(ValueError):
  """A bad row in an eval file, reported with its file, line and field."""

  def __init__(self, path: str, lineno: int, field: str, problem: str):
    super().__init__(f"{path}:{lineno}: field {field!r} {problem}; fix or remove that row")


def _get(row: Any, field: str, kind: type, path: str, lineno: int, where: str = "") -> Any:
  """`row[field]` (dotted for nesting), checked to be a `kind`; errors name `where + field`."""
  value = row
  for part in field.split("."):
    if not isinstance(value, dict) or part not in value:
      raise RowError(path, lineno, where + field, "is missing")
    value = value[part]
  if not isinstance(value, kind) or isinstance(value, bool):
    raise RowError(path, lineno, where + field, f"is {value!r}, not a {kind.__name__}")
  return value


def _texts(row: dict, field: str, path: str, lineno: int) -> tuple[str, ...]:
  items = _get(row, field, list, path, lineno)
  if len(items) < 2 or not all(isinstance(t, str) and t.strip() for t in items):
    raise RowError(path, lineno, field, f"is {items!r}; need at least two non-empty strings")
  return tuple(items)


class FileTask(base.Task):
  """Questions read once from `config.path`; evaluation only."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.path = io.resolve_path(config.path)
    self._questions: list[base.Question] | None = None

  @abc.abstractmethod
  def parse(self, row: dict, lineno: int) -> base.Question:
    """One validated question from a row of the file."""

  def questions(self, split: str = "eval", limit: int | None = None) -> list[base.Question]:
    base.check_split(self.name, split, allowed=("eval",))
    base.check_limit(self.name, limit)
    if self._questions is None:
      self._questions = self._load()
    return self._questions[:limit]

  def _load(self) -> list[base.Question]:
    try:
      rows = list(io.read_jsonl_numbered(self.path))
    except FileNotFoundError:
      raise ValueError(f"task {self.name!r}: eval file {self.path} does not exist; set "
                       f"tasks.{self.name}.path to a copy of it (the repository ships one under "
                       f"data/eval/)") from None
    out, seen = [], {}
    for lineno, row in rows:
      q = self.parse(row, lineno)
      if q.id in seen:
        raise RowError(self.path, lineno, "id", f"repeats {q.id!r} from line {seen[q.id]}")
      seen[q.id] = lineno
      out.append(q)
    if not out:
      raise ValueError(f"task {self.name!r}: eval file {self.path} has no rows")
    return out

  def train_documents(self, seed: int) -> Iterator[str]:
    raise ValueError(f"task {self.name!r} is an evaluation set ({self.path}) with no training "
                     f"documents; mix only synthetic tasks (arithmetic, spatial, causal, recall) "
                     f"into pretraining")


class MultipleChoiceTask(FileTask):
  """Lettered choices; the answer is " <letter>"."""

  stop_strings = ("\n",)
  max_new_tokens = 16  # a letter needs 2; the rest lets a model answer with the choice text

  @abc.abstractmethod
  def parse_choices(self, row: dict, lineno: int) -> tuple[str, str, tuple[str, ...], int]:
    """(id, stem, choices, gold index) of a row."""

  def parse(self, row: dict, lineno: int) -> base.Question:
    qid, stem, choices, gold = self.parse_choices(row, lineno)
    if len(choices) > len(verifiers.LETTERS):
      raise RowError(self.path, lineno, "choices",
                     f"has {len(choices)} entries; at most {len(verifiers.LETTERS)} are supported")
    lines = [f"Question: {stem.strip()}"]
    lines += [f"{verifiers.LETTERS[i]}. {c.strip()}" for i, c in enumerate(choices)]
    lines.append("Answer:")
    return base.Question(id=qid, prompt="\n".join(lines), answer=" " + verifiers.LETTERS[gold],
                         choices=tuple(c.strip() for c in choices))

  def verify(self, question: base.Question, completion: str) -> bool:
    """The completion names the gold choice: "B", " (b)", "B. lions", or its text (see
    `verifiers.choice_indices`); naming another choice, or none, is wrong."""
    gold = verifiers.LETTERS.index(question.answer.strip())
    return gold in verifiers.choice_indices(completion, question.choices)

  def _gold_index(self, row: dict, lineno: int, num_choices: int) -> int:
    gold = _get(row, "gold", int, self.path, lineno)
    if not 0 <= gold < num_choices:
      raise RowError(self.path, lineno, "gold",
                     f"is {gold}, outside 0..{num_choices - 1} (a 0-based choice index)")
    return gold


class Arc(MultipleChoiceTask):
  """AI2 format {id, question: {stem, choices: [{text, label}]}, answerKey}."""

  num_choices = 4  # 97% of items; a few have 3 or 5

  def parse_choices(self, row, lineno):
    qid = _get(row, "id", str, self.path, lineno)
    stem = _get(row, "question.stem", str, self.path, lineno)
    items = _get(row, "question.choices", list, self.path, lineno)
    labels, texts = [], []
    for i, item in enumerate(items):
      where = f"question.choices[{i}]."
      labels.append(_get(item, "label", str, self.path, lineno, where))
      texts.append(_get(item, "text", str, self.path, lineno, where))
    if len(items) < 2 or len(set(labels)) != len(labels):
      raise RowError(self.path, lineno, "question.choices",
                     f"has labels {labels}; need at least two distinct labels")
    key = _get(row, "answerKey", str, self.path, lineno)
    if key not in labels:
      raise RowError(self.path, lineno, "answerKey", f"is {key!r}, not one of the labels {labels}")
    return qid, stem, tuple(texts), labels.index(key)


class ArcEasy(Arc):
  name = "arc_easy"


class ArcChallenge(Arc):
  name = "arc_challenge"


class SciQ(MultipleChoiceTask):
  """{idx, question, choices[4], gold, correct_answer} with shuffled choices."""

  name = "sciq"
  num_choices = 4

  def parse_choices(self, row, lineno):
    idx = _get(row, "idx", int, self.path, lineno)
    stem = _get(row, "question", str, self.path, lineno)
    choices = _texts(row, "choices", self.path, lineno)
    gold = self._gold_index(row, lineno, len(choices))
    correct = _get(row, "correct_answer", str, self.path, lineno)
    if correct.strip() != choices[gold].strip():
      raise RowError(self.path, lineno, "gold", f"is {gold}, which picks {choices[gold]!r}, but "
                     f"correct_answer is {correct!r}")
    return f"idx{idx}", stem, choices, gold


class OpenBookQA(MultipleChoiceTask):
  """{query, choices[4], gold}; ids are line numbers."""

  name = "openbookqa"
  num_choices = 4

  def parse_choices(self, row, lineno):
    stem = _get(row, "query", str, self.path, lineno)
    choices = _texts(row, "choices", self.path, lineno)
    return f"line{lineno}", stem, choices, self._gold_index(row, lineno, len(choices))


class GSM8K(FileTask):
  """Grade-school math; the gold answer is the worked solution (calculator annotations removed)
  ending in "#### <number>"; a completion is right when its "####" number equals the gold one."""

  name = "gsm8k"
  num_choices = 0
  stop_strings = ("\n\n", "Question:")
  max_new_tokens = 256

  def parse(self, row, lineno):
    question = _get(row, "question", str, self.path, lineno)
    solution = _CALCULATOR.sub("", _get(row, "answer", str, self.path, lineno)).strip()
    if verifiers.gsm8k_final_answer(solution) is None:
      raise RowError(self.path, lineno, "answer", "has no final number after '####'")
    return base.Question(id=f"line{lineno}", prompt=f"Question: {question.strip()}\nAnswer:",
                         answer=" " + solution)

  def verify(self, question, completion):
    got = verifiers.gsm8k_final_answer(completion)
    return got is not None and got == verifiers.gsm8k_final_answer(question.answer)


class SimpleArithmetic(FileTask):
  """llm-foundry {context: "25-759=", continuation: "-734"}; the answer is " -734"."""

  name = "simple_arithmetic"
  num_choices = 0
  stop_strings = ("\n",)
  max_new_tokens = 8

  def __init__(self, config):
    super().__init__(config)
    try:
      ok = "{context}" in config.template and bool(config.template.format(context="1+1="))
    except (KeyError, IndexError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f"tasks.simple_arithmetic.template={config.template!r}: must contain "
                       f"'{{context}}' and no other braces, e.g. 'Q: {{context}}? A:'")

  def parse(self, row, lineno):
    context = _get(row, "context", str, self.path, lineno).strip()
    answer = _get(row, "continuation", str, self.path, lineno).strip()
    if not re.fullmatch(r"-?\d+", answer):
      raise RowError(self.path, lineno, "continuation", f"is {answer!r}, not an integer")
    return base.Question(id=f"line{lineno}", prompt=self.config.template.format(context=context),
                         answer=" " + answer)

  def verify(self, question, completion):
    """The completion starts with the correct integer ("-734", " -734.", "-734 is" all count)."""
    return verifiers.parse_int(completion) == int(question.answer)
