"""Registers t2jax tasks as seqio Tasks, for t5x-style pipelines (optional: needs `seqio`).

Each task `name` becomes seqio task `t2jax_<name>` with:
- split "validation": one example per eval question, {"id", "inputs": prompt, "targets": answer};
- split "train" (synthetic tasks only): endless {"targets": document} from `train_documents`.
Its metric is the task's own verifier: `accuracy` over decoded predictions (the mean over samples
when a model returns several per question).
"""

import functools
from typing import Mapping, Sequence

from t2jax.tasks import SYNTHETIC_TASKS, get_task
from t2jax.tasks.base import Task

PREFIX = "t2jax_"


def _import_seqio():
  try:
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"register_seqio_tasks needs seqio and TensorFlow ({e}); install them with "
                      f"`pip install seqio` (or `pip install -e .[seqio]`)") from e
  return seqio, tf


def _dataset_fn(task: Task, tf, split: str, shuffle_files: bool, seed: int | None = None):
  del shuffle_files  # The order is fixed by the task's own seeds.
  if split == "train":
    docs = functools.partial(task.train_documents, 0 if seed is None else seed)
    return tf.data.Dataset.from_generator(
        lambda: ({"targets": d} for d in docs()),
        output_signature={"targets": tf.TensorSpec((), tf.string)})
  questions = task.questions("eval")
  return tf.data.Dataset.from_tensor_slices({
      "id": [q.id for q in questions],
      "inputs": [q.prompt for q in questions],
      "targets": [q.answer for q in questions],
  })


def _postprocess(output: str, example: Mapping | None = None, is_target: bool = False):
  """Targets become question ids (so the metric can look the question up); predictions stay text."""
  if is_target:
    qid = example["id"]
    return qid.decode("utf-8") if isinstance(qid, bytes) else str(qid)
  return output


def _accuracy_fn(task: Task):
  by_id = {q.id: q for q in task.questions("eval")}

  def accuracy(targets: Sequence[str], predictions: Sequence) -> dict:
    scores = []
    for qid, prediction in zip(targets, predictions):
      samples = [prediction] if isinstance(prediction, str) else list(prediction)
      scores.append(sum(task.verify(by_id[qid], s) for s in samples) / max(len(samples), 1))
    return {"accuracy": sum(scores) / max(len(scores), 1)}

  return accuracy


def register_seqio_tasks(names: Sequence[str], vocabulary, options: Mapping | None = None,
                         prefix: str = PREFIX) -> list[str]:
  """Registers `names` with seqio's TaskRegistry; returns the registered seqio task names.

  `vocabulary` is a `seqio.Vocabulary`; `options` maps a task name to its `get_task` options.
  An already-registered name is replaced.
  """
  seqio, tf = _import_seqio()
  features = {
      "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=False, required=False),
      "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }
  registered = []
  for name in names:
    task = get_task(name, (options or {}).get(name))
    splits = ("train", "validation") if name in SYNTHETIC_TASKS else ("validation",)
    seqio_name = prefix + name
    seqio.TaskRegistry.remove(seqio_name)
    seqio.TaskRegistry.add(
        seqio_name,
        source=seqio.FunctionDataSource(
            dataset_fn=functools.partial(_dataset_fn, task, tf), splits=splits),
        output_features=features,
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        postprocess_fn=_postprocess,
        metric_fns=[_accuracy_fn(task)])
    registered.append(seqio_name)
  return registered
