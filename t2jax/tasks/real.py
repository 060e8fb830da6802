"""Real question sets read from the shipped files (`data/eval/`): eval split, and a train split
(for fine-tuning) where the data has one.

Multiple-choice sets (ARC-Easy, ARC-Challenge, SciQ, OpenBookQA) come in two forms,
`tasks.<name>.format`:
- "cloze" (default, for sampled evaluation): "Question: <stem>\\nAnswer:" with no choices shown;
  the gold answer is " <the correct choice's text>" and a completion is right when its answer text
  equals it after `verifiers.normalize_answer` (case, punctuation, articles). A guess that ignores
  the question passes almost none, so chance is 0 and pass@k measures the model.
- "letters" (k = 1 accuracy only): the choices follow the stem as "A. <choice>" lines and the gold
  answer is " B". A fixed letter passes about a quarter of the questions per sample, so pass@k
  tends to 1 for any model: such a task is `guessable` and has `num_choices` > 0.
Letters follow the order of the choices in the file; ARC items labelled "1"-"5" are shown as "A"-"E"
and their answer key is mapped through the label's position, never read as an index.
GSM8K asks "Question: ...\\nAnswer:" and is judged on the number after "####"; simple arithmetic
(llm-foundry) is asked in the synthetic arithmetic format "Q: 25-759=? A:"; LAMBADA gives a
passage without its last word, which the model must generate.

Train questions get ids "train/<id>", and those whose normalized stem (or passage) also occurs in
the eval split are dropped, so the splits never share an id or a prompt. Every reader checks each
row and names the file, line and field of the first bad one.
"""

import abc
import dataclasses
import re
from typing import Any, Iterator

import ml_collections

from t2jax import io
from t2jax.tasks import base, verifiers

_CALCULATOR = re.compile(r"<<[^<>]*>>")
FORMATS = ("cloze", "letters")


def _multiple_choice(path: str, train_path: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      path=path,
      train_path=train_path,
      format="cloze",  # "cloze": generate the answer text (sampling); "letters": A-D (k = 1 only)
  ))


def default_configs() -> dict[str, ml_collections.ConfigDict]:
  """Paths are relative to the repository root unless absolute; `train_path` is the train split."""
  return {
      "arc_easy": _multiple_choice("data/eval/arc/ARC-Easy-Test.jsonl",
                                   "data/eval/arc/ARC-Easy-Train.jsonl"),
      "arc_challenge": _multiple_choice("data/eval/arc/ARC-Challenge-Test.jsonl",
                                        "data/eval/arc/ARC-Challenge-Train.jsonl"),
      "sciq": _multiple_choice("data/eval/sciq/test.jsonl", "data/eval/sciq/train.jsonl"),
      "openbookqa": _multiple_choice("data/eval/openbookqa/test.jsonl",
                                     "data/eval/openbookqa/train.jsonl"),
      "gsm8k": ml_collections.ConfigDict(dict(path="data/eval/gsm8k/test.jsonl")),
      "simple_arithmetic": ml_collections.ConfigDict(dict(
          path="data/eval/arithmetic/simple_arithmetic_nospaces.jsonl",
          template="Q: {context}? A:",  # "{context}" alone gives llm-foundry's own format
      )),
      "lambada": ml_collections.ConfigDict(dict(path="data/eval/lambada/test.jsonl")),
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


@dataclasses.dataclass(frozen=True)
class Item:
  """A parsed row: `key` (its stem or passage) decides train/eval overlap."""
  question: base.Question
  key: str


class FileTask(base.Task):
  """Questions read once per split from `config.path` (eval) and `config.train_path` (train)."""

  guessable = False
  no_train_split = "its data ships an eval file only; fine-tune on a task that has one"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.path = io.resolve_path(config.path)
    self.train_path = io.resolve_path(config.train_path) if config.get("train_path") else None
    self.splits = ("train", "eval") if self.train_path else ("eval",)
    self._items: dict[str, list[Item]] = {}

  @abc.abstractmethod
  def parse(self, row: dict, lineno: int, path: str) -> Item:
    """One validated question from a row of the file `path`."""

  def questions(self, split: str = "eval", limit: int | None = None) -> list[base.Question]:
    """The questions of `split` in file order (the first `limit` of them when given)."""
    if split == "train" and "train" not in self.splits:
      raise ValueError(f"task {self.name!r} has no train split: {self.no_train_split}")
    base.check_split(self.name, split, allowed=self.splits)
    base.check_limit(self.name, limit)
    return [item.question for item in self._load(split)[:limit]]

  def _load(self, split: str) -> list[Item]:
    if split not in self._items:
      items = self._read(split, self.path if split == "eval" else self.train_path)
      if split == "train":
        eval_keys = {item.key for item in self._load("eval")}
        items = [Item(dataclasses.replace(item.question, id="train/" + item.question.id), item.key)
                 for item in items if item.key not in eval_keys]
      self._items[split] = items
    return self._items[split]

  def _read(self, split: str, path: str) -> list[Item]:
    option = "path" if split == "eval" else "train_path"
    try:
      rows = list(io.read_jsonl_numbered(path))
    except FileNotFoundError:
      raise ValueError(f"task {self.name!r}: {split} file {path} does not exist; set "
                       f"tasks.{self.name}.{option} to a copy of it (the repository ships one "
                       f"under data/eval/)") from None
    out, seen = [], {}
    for lineno, row in rows:
      item = self.parse(row, lineno, path)
      item = dataclasses.replace(item, key=verifiers.normalize_answer(item.key))
      if item.question.id in seen:
        raise RowError(path, lineno, "id",
                       f"repeats {item.question.id!r} from line {seen[item.question.id]}")
      seen[item.question.id] = lineno
      out.append(item)
    if not out:
      raise ValueError(f"task {self.name!r}: {split} file {path} has no rows")
    return out

  def train_documents(self, seed: int) -> Iterator[str]:
    raise ValueError(f"task {self.name!r} is a question set ({self.path}), not a source of "
                     f"pretraining documents; mix only synthetic tasks (arithmetic, spatial, "
                     f"causal, recall) into pretraining (its train split, if any, is "
                     f"questions('train'), for fine-tuning)")


class MultipleChoiceTask(FileTask):
  """A multiple-choice set asked as cloze (the answer text; default) or with lettered choices."""

  stop_strings = ("\n",)
  max_choices: int  # choices per question in the lettered form (most items)
  lettered_train_split = True  # whether the train file has choices

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    if config.format not in FORMATS:
      raise ValueError(f"tasks.{self.name}.format={config.format!r}: use 'cloze' (the answer text "
                       f"is generated; for sampled evaluation) or 'letters' (lettered choices; "
                       f"k = 1 accuracy only)")
    self.letters = config.format == "letters"
    self.guessable = self.letters
    self.num_choices = self.max_choices if self.letters else 0
    # A letter needs 2 tokens (the rest lets a model answer with the text); 99% of the gold texts
    # have at most 87 characters, about 35 tokens of a ~2k BPE.
    self.max_new_tokens = 16 if self.letters else 40
    if self.letters and not self.lettered_train_split:
      self.splits = ("eval",)
      self.no_train_split = (f"its train file has no choices, so it has no lettered form; use "
                             f"tasks.{self.name}.format='cloze'")

  @abc.abstractmethod
  def parse_choices(self, row: dict, lineno: int, path: str
                    ) -> tuple[str, str, tuple[str, ...], int | str]:
    """(id, stem, choices, gold index) of a row; (id, stem, (), gold text) when it has no
    choices."""

  def parse(self, row, lineno, path):
    qid, stem, choices, gold = self.parse_choices(row, lineno, path)
    stem = stem.strip()
    if not self.letters:
      text = gold if isinstance(gold, str) else choices[gold]
      return Item(base.Question(id=qid, prompt=f"Question: {stem}\nAnswer:",
                                answer=" " + text.strip()), key=stem)
    if not choices:
      raise ValueError(f"task {self.name!r}: {path} has no choices (field 'choices'), so it cannot "
                       f"be asked with tasks.{self.name}.format='letters'; use format='cloze'")
    if len(choices) > len(verifiers.LETTERS):
      raise RowError(path, lineno, "choices",
                     f"has {len(choices)} entries; at most {len(verifiers.LETTERS)} are supported")
    lines = [f"Question: {stem}"]
    lines += [f"{verifiers.LETTERS[i]}. {c.strip()}" for i, c in enumerate(choices)]
    lines.append("Answer:")
    return Item(base.Question(id=qid, prompt="\n".join(lines), answer=" " + verifiers.LETTERS[gold],
                              choices=tuple(c.strip() for c in choices)), key=stem)

  def verify(self, question: base.Question, completion: str) -> bool:
    """Cloze: the completion's answer text is the gold text (`verifiers.matches_answer`: "The
    mitochondria.", "mitochondria, which ..." match " mitochondria"). Letters: the completion names
    the gold choice ("B", " (b)", "B. lions" or its text; see `verifiers.choice_indices`); naming
    another choice, or none, is wrong."""
    if not self.letters:
      return verifiers.matches_answer(completion, question.answer)
    gold = verifiers.LETTERS.index(question.answer.strip())
    return gold in verifiers.choice_indices(completion, question.choices)

  @staticmethod
  def _gold_index(row: dict, lineno: int, path: str, num_choices: int) -> int:
    gold = _get(row, "gold", int, path, lineno)
    if not 0 <= gold < num_choices:
      raise RowError(path, lineno, "gold",
                     f"is {gold}, outside 0..{num_choices - 1} (a 0-based choice index)")
    return gold


class Arc(MultipleChoiceTask):
  """AI2 format {id, question: {stem, choices: [{text, label}]}, answerKey}."""

  max_choices = 4  # 97% of items; a few have 3 or 5

  def parse_choices(self, row, lineno, path):
    qid = _get(row, "id", str, path, lineno)
    stem = _get(row, "question.stem", str, path, lineno)
    items = _get(row, "question.choices", list, path, lineno)
    labels, texts = [], []
    for i, item in enumerate(items):
      where = f"question.choices[{i}]."
      labels.append(_get(item, "label", str, path, lineno, where))
      texts.append(_get(item, "text", str, path, lineno, where))
    if len(items) < 2 or len(set(labels)) != len(labels):
      raise RowError(path, lineno, "question.choices",
                     f"has labels {labels}; need at least two distinct labels")
    key = _get(row, "answerKey", str, path, lineno)
    if key not in labels:
      raise RowError(path, lineno, "answerKey", f"is {key!r}, not one of the labels {labels}")
    return qid, stem, tuple(texts), labels.index(key)


class ArcEasy(Arc):
  name = "arc_easy"


class ArcChallenge(Arc):
  name = "arc_challenge"


class SciQ(MultipleChoiceTask):
  """Eval {idx, question, choices[4], gold, correct_answer} with shuffled choices; the train file
  has {idx, question, correct_answer} only (cloze form)."""

  name = "sciq"
  max_choices = 4
  lettered_train_split = False

  def parse_choices(self, row, lineno, path):
    idx = _get(row, "idx", int, path, lineno)
    stem = _get(row, "question", str, path, lineno)
    correct = _get(row, "correct_answer", str, path, lineno)
    if not correct.strip():
      raise RowError(path, lineno, "correct_answer", "is empty")
    if "choices" not in row:
      return f"idx{idx}", stem, (), correct
    choices = _texts(row, "choices", path, lineno)
    gold = self._gold_index(row, lineno, path, len(choices))
    if correct.strip() != choices[gold].strip():
      raise RowError(path, lineno, "gold", f"is {gold}, which picks {choices[gold]!r}, but "
                     f"correct_answer is {correct!r}")
    return f"idx{idx}", stem, choices, gold


class OpenBookQA(MultipleChoiceTask):
  """{query, choices[4], gold}; ids are line numbers."""

  name = "openbookqa"
  max_choices = 4

  def parse_choices(self, row, lineno, path):
    stem = _get(row, "query", str, path, lineno)
    choices = _texts(row, "choices", path, lineno)
    return f"line{lineno}", stem, choices, self._gold_index(row, lineno, path, len(choices))


class GSM8K(FileTask):
  """Grade-school math; the gold answer is the worked solution (calculator annotations removed)
  ending in "#### <number>"; a completion is right when its "####" number equals the gold one."""

  name = "gsm8k"
  num_choices = 0
  stop_strings = ("\n\n", "Question:")
  max_new_tokens = 256

  def parse(self, row, lineno, path):
    question = _get(row, "question", str, path, lineno).strip()
    solution = _CALCULATOR.sub("", _get(row, "answer", str, path, lineno)).strip()
    if verifiers.gsm8k_final_answer(solution) is None:
      raise RowError(path, lineno, "answer", "has no final number after '####'")
    return Item(base.Question(id=f"line{lineno}", prompt=f"Question: {question}\nAnswer:",
                              answer=" " + solution), key=question)

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

  def parse(self, row, lineno, path):
    context = _get(row, "context", str, path, lineno).strip()
    answer = _get(row, "continuation", str, path, lineno).strip()
    if not re.fullmatch(r"-?\d+", answer):
      raise RowError(path, lineno, "continuation", f"is {answer!r}, not an integer")
    return Item(base.Question(id=f"line{lineno}", prompt=self.config.template.format(
        context=context), answer=" " + answer), key=context)

  def verify(self, question, completion):
    """The completion starts with the correct integer ("-734", " -734.", "-734 is" all count)."""
    return verifiers.parse_int(completion) == int(question.answer)


class Lambada(FileTask):
  """LAMBADA (OpenAI's detokenized test set) {text}: the prompt is the passage up to its last
  whitespace-separated word, the gold answer that word (with the space before it, which 5,146 of
  the 5,153 passages have; after a line break the prompt keeps the break), so prompt + answer is
  the passage. A completion is right when its first word, punctuation stripped, is the gold word
  with its punctuation stripped (case-sensitive: '"Nadia' is answered by "Nadia," or "Nadia")."""

  name = "lambada"
  num_choices = 0
  stop_strings = ("\n",)
  max_new_tokens = 10  # the longest target word is 18 characters

  def parse(self, row, lineno, path):
    text = _get(row, "text", str, path, lineno)
    m = re.search(r"(\s)(\S+)$", text)
    if not m or not text[:m.start()].strip() or not verifiers.strip_punctuation(m.group(2)):
      raise RowError(path, lineno, "text", f"ends {text[-40:]!r}; need a passage whose last "
                     f"whitespace-separated word has letters or digits")
    cut = m.start() if m.group(1) == " " else m.end(1)
    return Item(base.Question(id=f"line{lineno}", prompt=text[:cut], answer=text[cut:]),
                key=text[:cut])

  def verify(self, question, completion):
    return verifiers.first_word(completion) == verifiers.strip_punctuation(question.answer.strip())
