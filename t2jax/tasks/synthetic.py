"""Seeded synthetic tasks whose train and eval problems never overlap.

A problem is identified by a canonical key (e.g. "3+4-1"). A stable hash of (task, split_seed, key)
puts every possible problem in exactly one split: the eval pool when it falls below
`eval_fraction`, the train pool otherwise. Eval questions are the first `num_eval` distinct
eval-pool problems drawn from `eval_seed`, so every checkpoint sees the same set;
`train_documents` draws only from the train pool, so no eval question is ever trained on,
whatever seed the data pipeline uses.
"""

import abc
import dataclasses
from typing import Iterator

import ml_collections

from t2jax.tasks import base

# Draws allowed per requested question before the problem space is declared too small.
_MAX_DRAWS_PER_QUESTION = 200


@dataclasses.dataclass(frozen=True)
class Problem:
  key: str     # canonical, unique description; decides the split
  prompt: str
  answer: str


def common_config(**knobs) -> ml_collections.ConfigDict:
  """Split and document knobs every synthetic task shares, plus its own `knobs`."""
  return ml_collections.ConfigDict(dict(
      num_eval=500,              # fixed eval questions (the same for every checkpoint)
      eval_fraction=0.2,         # share of the problem space reserved for eval
      split_seed=0,              # seeds the train/eval partition of the problem space
      eval_seed=0,               # seeds which eval-pool problems form the eval set
      problems_per_document=4,   # prompt+answer lines per training document
      **knobs))


class SyntheticTask(base.Task):
  """A generator of problems with a hash partition into train and eval pools."""

  num_choices = 0
  guessable = False
  stop_strings = ("\n",)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.cfg = base.knobs(config)
    self._check_positive("num_eval", "problems_per_document")
    if not 0.0 < self.cfg.eval_fraction < 1.0:
      raise ValueError(f"tasks.{self.name}.eval_fraction={self.cfg.eval_fraction!r}: must lie in "
                       f"(0, 1); e.g. 0.2 reserves a fifth of the problem space for eval")
    self._cache: dict[str, list[base.Question]] = {}

  @abc.abstractmethod
  def sample(self, rng: base.Rng) -> Problem:
    """One problem drawn from the whole problem space."""

  def split_of(self, key: str) -> str:
    in_eval = base.unit_hash(self.name, self.cfg.split_seed, key) < self.cfg.eval_fraction
    return "eval" if in_eval else "train"

  def questions(self, split: str = "eval", limit: int | None = None) -> list[base.Question]:
    """The first `limit` (default `num_eval`) distinct problems of `split`, drawn from `eval_seed`.

    The "train" split is a fixed sample of the train pool, for fine-tuning or few-shot prompts.
    """
    base.check_split(self.name, split)
    base.check_limit(self.name, limit)
    count = self.cfg.num_eval if limit is None else limit
    cached = self._cache.get(split, [])
    if len(cached) < count:
      cached = self._draw(split, count)
      self._cache[split] = cached
    return cached[:count]

  def _draw(self, split: str, count: int) -> list[base.Question]:
    rng = base.Rng(self.name, "questions", split, self.cfg.eval_seed)
    seen: set[str] = set()
    out: list[base.Question] = []
    for _ in range(_MAX_DRAWS_PER_QUESTION * max(count, 1)):
      if len(out) == count:
        return out
      problem = self.sample(rng)
      if problem.key in seen or self.split_of(problem.key) != split:
        continue
      seen.add(problem.key)
      out.append(base.Question(id=problem.key, prompt=problem.prompt, answer=problem.answer))
    if len(out) == count:
      return out
    raise ValueError(
        f"task {self.name!r}: found only {len(out)} distinct {split} problems of {count} "
        f"requested; "
        f"the problem space is too small for tasks.{self.name}.num_eval={self.cfg.num_eval} "
        f"with eval_fraction={self.cfg.eval_fraction}; make the task harder (more operands, "
        f"moves, causes or entities), raise eval_fraction, or lower num_eval")

  def train_documents(self, seed: int) -> Iterator[str]:
    """Endless documents of `problems_per_document` train-pool lines "prompt+answer\\n"."""
    rng = base.Rng(self.name, "train_documents", seed)
    lines: list[str] = []
    while True:
      problem = self.sample(rng)
      if self.split_of(problem.key) != "train":
        continue
      lines.append(problem.prompt + problem.answer + "\n")
      if len(lines) == self.cfg.problems_per_document:
        yield "".join(lines)
        lines = []

  def _check_positive(self, *fields: str) -> None:
    for field in fields:
      value = getattr(self.cfg, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"tasks.{self.name}.{field}={value!r}: must be a positive integer")

  def _check_range(self, low_field: str, high_field: str, minimum: int) -> None:
    low, high = getattr(self.cfg, low_field), getattr(self.cfg, high_field)
    if not (isinstance(low, int) and isinstance(high, int) and minimum <= low <= high):
      raise ValueError(f"tasks.{self.name}.{low_field}={low!r}, {high_field}={high!r}: need "
                       f"integers with {minimum} <= {low_field} <= {high_field}")
