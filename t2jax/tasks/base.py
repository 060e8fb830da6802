"""The task interface: questions with gold answers, a verifier, and training documents."""

import abc
import collections
import dataclasses
import hashlib
import random
from typing import Any, Iterator, Mapping, Sequence

SPLITS = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class Question:
  id: str                        # stable, unique within task and split
  prompt: str                    # text given to the model (ends right where the answer starts)
  answer: str                    # gold continuation; its NLL under the model is recorded
  choices: tuple[str, ...] = ()  # multiple-choice options (empty for free-form tasks)


class Task(abc.ABC):
  """A question set with a verifier; synthetic tasks also yield training documents."""

  name: str
  # Choices shown with each question (lettered form); 0 when the answer is generated freely. The
  # fit's chance floor is 1/num_choices (0 for 0).
  num_choices: int
  # Whether one fixed answer, given to every question, passes >= 10% of them (a fixed letter
  # passes ~25% of lettered multiple choice): then pass@k -> 1 for any model as k grows, and only
  # k = 1 accuracy means anything.
  guessable: bool
  stop_strings: tuple[str, ...]  # generation stops at the first of these
  max_new_tokens: int            # generation budget (tokens of a ~2k BPE)
  splits: tuple[str, ...] = SPLITS  # the splits `questions` serves

  @abc.abstractmethod
  def questions(self, split: str = "eval", limit: int | None = None) -> list[Question]:
    """The fixed question list of `split` (the first `limit` of them when given); "train"
    questions (for fine-tuning) never share an id or a prompt with "eval" ones."""

  @abc.abstractmethod
  def verify(self, question: Question, completion: str) -> bool:
    """Whether `completion` (generated text after the prompt) answers `question` correctly."""

  @abc.abstractmethod
  def train_documents(self, seed: int) -> Iterator[str]:
    """Endless training-split documents formatted like prompt+answer."""

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r})"


def check_split(task: str, split: str, allowed: Sequence[str] = SPLITS) -> None:
  if split not in allowed:
    raise ValueError(f"task {task!r}: split={split!r} is not available; use one of {list(allowed)}")


def check_limit(task: str, limit: int | None) -> None:
  if limit is not None and (not isinstance(limit, int) or limit < 0):
    raise ValueError(f"task {task!r}: limit={limit!r} must be None or a non-negative integer")


def knobs(config: Mapping[str, Any]) -> tuple:
  """An immutable namedtuple view of a task config: attribute reads are ~50x faster than
  ConfigDict's, which matters in generators that run inside the data pipeline."""
  items = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return collections.namedtuple("Knobs", items)(**items)


def stable_hash(*parts: object) -> int:
  """A 64-bit hash of `parts` that is the same in every process and Python version."""
  text = "\x1f".join(str(p) for p in parts)
  return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def unit_hash(*parts: object) -> float:
  """`stable_hash` mapped to [0, 1)."""
  return stable_hash(*parts) / 2.0**64


class Rng:
  """Seeded sampler built only on `random.Random.random`, whose stream Python keeps fixed
  across versions (unlike `randrange`/`choice`), so eval sets never change under an upgrade."""

  def __init__(self, *seed_parts: object):
    self._random = random.Random(stable_hash(*seed_parts)).random

  def uniform(self) -> float:
    return self._random()

  def below(self, n: int) -> int:
    """Uniform integer in [0, n)."""
    return min(int(self._random() * n), n - 1)

  def integer(self, low: int, high: int) -> int:
    """Uniform integer in [low, high] (both included)."""
    return low + self.below(high - low + 1)

  def choice(self, seq: Sequence):
    return seq[self.below(len(seq))]

  def shuffled(self, seq: Sequence) -> list:
    """A Fisher-Yates shuffled copy."""
    out = list(seq)
    for i in range(len(out) - 1, 0, -1):
      j = self.below(i + 1)
      out[i], out[j] = out[j], out[i]
    return out
