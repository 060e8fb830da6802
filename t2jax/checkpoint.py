"""Orbax checkpoints of the train state and the grain data iterator, with damaged-checkpoint fallback."""

import os
import logging
from typing import Any, Optional

import grain
import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
  """Saves `{state, data}` every `every` steps (and when forced); restores the newest intact step."""

  def __init__(self, directory: str, *, every: int, keep: int = 2):
    if every <= 0:
      raise ValueError(f"train.checkpoint_every={every}: must be a positive number of steps")
    self.every = every
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=("state", "data"))

  def should_save(self, step: int) -> bool:
    return step % self.every == 0

  def save(self, step: int, state: Any, data_iter) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter)),
        force=True)
    self.manager.wait_until_finished()

  def restore_latest(self, abstract_state: Any, data_iter=None) -> Optional[tuple]:
    """Returns (step, state) from the newest checkpoint that restores, or None if there is none.

    A checkpoint that fails to restore (truncated or corrupted files) is skipped with a warning and
    the previous one is tried; once one restores, the damaged newer ones are deleted so the run can
    save those steps again. `data_iter` (None: not restored) is set to its saved position.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self._restore_newest(items, lambda restored: restored["state"])

  def restore_latest_params(self, abstract_params: Any) -> Optional[tuple]:
    """Returns (step, params) like `restore_latest`, reading only the state's `params` subtree
    (no optimizer moments, no data iterator) into the shapes and shardings of `abstract_params`."""
    item = {"params": abstract_params}
    items = {"state": ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)}
    return self._restore_newest(items, lambda restored: restored["state"]["params"])

  def _restore_newest(self, items: dict, pick) -> Optional[tuple]:
    steps = sorted(self.manager.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
      except Exception as e:  # noqa: BLE001  (any failure means this checkpoint is unusable)
        log.warning("checkpoint at step %d in %s is damaged (%s: %s); trying the previous one",
                    step, self.manager.directory, type(e).__name__, str(e)[:200])
        print(f"WARNING: checkpoint step {step} is damaged ({type(e).__name__}); "
              "falling back to the previous checkpoint", flush=True)
        damaged.append(step)
        continue
      for bad in damaged:  # the run will save these steps again
        self.manager.delete(bad)
      return step, pick(restored)
    if steps:
      raise RuntimeError(f"every checkpoint in {self.manager.directory} is damaged (steps {steps}); "
                         "delete that directory to train from scratch")
    return None

  def close(self) -> None:
    self.manager.close()


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings, for restoring straight onto the mesh."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)
