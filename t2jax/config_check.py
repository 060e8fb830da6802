"""One check of a whole run config before any work, so that a misspelt eval task or a bad fit
budget fails in seconds instead of after the ladder has trained.

  config_check.validate(config, stages)  # the ladder: `t2jax.launch.run` calls it first
  config_check.check_run(config)   # one training run: `python -m t2jax.train` calls it first

Each block keeps its own checker (`data.validate_config`, `train.check_config`,
`evaluate.check_config`, `ladder.parse_rungs`, `fit.check_config`, `validate.check_config`, the
task classes); this module calls them all and checks what lies between blocks: task names in
`eval.tasks` and `data.mixture`, and every task's options. Nothing here touches a JAX backend.
"""

import difflib
from typing import Sequence

import ml_collections

from t2jax import data, evaluate, fit, io, ladder, posttrain, sizes, tasks, train
from t2jax import validate as validate_lib
from t2jax.tasks import Task
from t2jax.tokenizer import load_tokenizer


def check_run(config: ml_collections.ConfigDict) -> None:
  """The blocks one training run reads: data, model, train, task options and the mixture."""
  data.validate_config(config.data)
  train.check_config(config)
  if config.model.size not in sizes.SIZES:
    raise ValueError(f"model.size={config.model.size!r} is unknown; choose one of "
                     f"{sorted(sizes.SIZES)}")
  check_task_options(config.tasks)
  for i, (name, _) in enumerate(config.data.mixture):
    task = _task(config, name, f"data.mixture[{i}]")
    try:
      task.train_documents(config.data.seed)  # an evaluation-only task raises here
    except ValueError as e:
      raise ValueError(f"data.mixture[{i}]: {e}") from None


def validate(config: ml_collections.ConfigDict, stages: Sequence[str] = ()) -> None:
  """The whole ladder config: `check_run`'s blocks, the rungs, eval, the fit/plan settings, the
  validation settings that need no fit (`validate.check_config`) and, when `stages` include it,
  post-training (`posttrain.check_config`: train splits, overlap with the eval questions).

  Every eval task draws (or reads) its questions, so a problem space too small for
  `eval.num_questions` (or, with validation budgets, `validate.num_questions`) or a missing eval
  file fails now.
  """
  check_run(config)
  ladder.selected(config.ladder, ladder.parse_rungs(config))
  evaluate.check_config(config.eval)
  limit = config.eval.num_questions or None
  for i, name in enumerate(config.eval.tasks):
    task = _task(config, name, f"eval.tasks[{i}]")
    try:
      task.questions(config.eval.split, limit)
    except ValueError as e:
      raise ValueError(f"eval.tasks[{i}]={name!r} with eval.split={config.eval.split!r} and "
                       f"eval.num_questions={config.eval.num_questions}: {e}") from None
  fit.check_config(config.fit)
  validate_lib.check_config(config, load_tokenizer(io.resolve_path(config.data.tokenizer))
                            .padded_vocab_size)
  if config.validate.budgets:
    v = config.validate
    for i, name in enumerate(config.eval.tasks):
      try:
        _task(config, name, f"eval.tasks[{i}]").questions(v.split, v.num_questions or None)
      except ValueError as e:
        raise ValueError(f"eval.tasks[{i}]={name!r} with validate.split={v.split!r} and "
                         f"validate.num_questions={v.num_questions}: {e}") from None
  if "posttrain" in stages:
    posttrain.check_config(config.posttrain, config)


def check_task_options(task_cfg: ml_collections.ConfigDict) -> None:
  """Every `tasks.<name>` block names a known task and builds it (option names, types, values)."""
  for name in task_cfg.keys():
    if name not in tasks.task_names():
      raise ValueError(f"tasks.{name}: unknown task{_did_you_mean(name)}; the tasks block holds "
                       f"{tasks.task_names()}")
    tasks.get_task(name, task_cfg[name])


def _task(config: ml_collections.ConfigDict, name: str, field: str) -> Task:
  if name not in tasks.task_names():
    raise ValueError(f"{field}={name!r} is not a task{_did_you_mean(name)}; choose from "
                     f"{tasks.task_names()}")
  return tasks.get_task(name, config.tasks.get(name))


def _did_you_mean(name: str) -> str:
  close = difflib.get_close_matches(name, tasks.task_names(), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""
