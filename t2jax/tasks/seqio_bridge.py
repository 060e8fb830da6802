"""Registers t2jax tasks as seqio Tasks, for t5x-style pipelines (optional: needs `seqio`).

Each task `name` becomes seqio task `t2jax_<name>` with one example {"id", "inputs": prompt,
"targets": answer} per question, in split "validation" (the eval questions) and, where the task has
one, "train" (its train questions, for fine-tuning; disjoint from validation). Pretraining
documents come from `t2jax.data`, not from here. Its metric is the task's own verifier: `accuracy`
over decoded predictions (the mean over samples when a model returns several per question).

    vocab = seqio.ByteVocabulary()                    # any seqio.Vocabulary
    register_seqio_tasks(["arithmetic", "sciq"], vocab)
    seqio.Evaluator("t2jax_sciq", seqio.PrefixLMFeatureConverter(pack=False)).evaluate(...)
"""

import functools
from typing import Mapping, Sequence

from t2jax.tasks import get_task
from t2jax.tasks.base import Task

PREFIX = "t2jax_"


def _import_seqio():
  try:
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"register_seqio_tasks needs seqio and TensorFlow ({e}); install them with "
                      f"`pip install -e .[seqio]` (seqio 0.0.20 and TensorFlow 2.21, about 3.4 GB; "
                      f"see BUILD_NOTES.md)") from e
  return seqio, tf


def _dataset_fn(task: Task, tf, split: str, shuffle_files: bool, seed: int | None = None):
  del shuffle_files, seed  # The order is fixed by the task's own seeds.
  questions = task.questions("eval" if split == "validation" else split)
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
    splits = ("train", "validation") if "train" in task.splits else ("validation",)
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
