"""Task registry: synthetic generators and real eval sets behind one `Task` interface.

    task = get_task("arithmetic", {"max_operands": 4})
    for q in task.questions(limit=3):
      task.verify(q, " 6")
    docs = task.train_documents(seed=0)   # synthetic tasks only
    train = task.questions("train")       # for fine-tuning; raises for a task without one

`default_config()` holds every task's knobs (difficulty, counts, seeds, paths); `options` override
them per task, and an unknown or ill-typed option is an error. The multiple-choice sets
(`MULTIPLE_CHOICE_TASKS`) are asked as cloze by default; `{"format": "letters"}` shows lettered
choices, for k = 1 accuracy only (`task.guessable` is then True: a fixed letter passes ~25%).
"""

from typing import Callable, Mapping

import ml_collections

from t2jax.tasks import arithmetic, causal, real, recall, spatial
from t2jax.tasks.base import Question, Task

SYNTHETIC_TASKS = ("arithmetic", "spatial", "causal", "recall")
REAL_TASKS = ("arc_easy", "arc_challenge", "sciq", "openbookqa", "gsm8k", "simple_arithmetic",
              "lambada")
MULTIPLE_CHOICE_TASKS = ("arc_easy", "arc_challenge", "sciq", "openbookqa")

_CLASSES: dict[str, Callable[[ml_collections.FrozenConfigDict], Task]] = {
    "arithmetic": arithmetic.Arithmetic,
    "spatial": spatial.Spatial,
    "causal": causal.Causal,
    "recall": recall.Recall,
    "arc_easy": real.ArcEasy,
    "arc_challenge": real.ArcChallenge,
    "sciq": real.SciQ,
    "openbookqa": real.OpenBookQA,
    "gsm8k": real.GSM8K,
    "simple_arithmetic": real.SimpleArithmetic,
    "lambada": real.Lambada,
}


def task_names() -> list[str]:
  return list(_CLASSES)


def default_config() -> ml_collections.ConfigDict:
  """One sub-config per task name."""
  cfg = ml_collections.ConfigDict()
  cfg.arithmetic = arithmetic.default_config()
  cfg.spatial = spatial.default_config()
  cfg.causal = causal.default_config()
  cfg.recall = recall.default_config()
  for name, sub in real.default_configs().items():
    cfg[name] = sub
  return cfg


def get_task(name: str, options: Mapping | None = None) -> Task:
  """The task `name` with its default config updated by `options` (a dict or ConfigDict)."""
  if name not in _CLASSES:
    raise ValueError(f"unknown task {name!r}; known tasks: {task_names()}")
  config = default_config()[name]
  for key, value in (options or {}).items():
    if key not in config:
      raise ValueError(f"tasks.{name}: unknown option {key!r}; known options: {sorted(config)}")
    try:
      config[key] = value
    except TypeError as e:
      raise ValueError(f"tasks.{name}.{key}={value!r}: wrong type for this option ({e})") from e
  return _CLASSES[name](ml_collections.FrozenConfigDict(config))


__all__ = ["Question", "Task", "SYNTHETIC_TASKS", "REAL_TASKS", "MULTIPLE_CHOICE_TASKS",
           "task_names", "default_config", "get_task"]
