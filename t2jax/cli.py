"""The pattern every entry point (`python -m t2jax.launch`, `t2jax.train`, `t2jax.fit`) follows:

  def define_flags() -> dict:            # flags live in a function, so importing defines none
    return {"config": cli.config_file_flag("configs/ladder.py", "..."), ...}

  def main(argv, flags_: dict) -> None:
    cli.no_extra_args(argv)
    config = flags_["config"].value
    cli.start(config.distributed, cpu_devices=config.fit.num_chains)  # before any JAX backend
    ...

  if __name__ == "__main__":
    app.run(functools.partial(main, flags_=define_flags()))
"""

import os
import re
from typing import Optional

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from t2jax import metrics, sharding

_XLA_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def config_file_flag(default: Optional[str], help_text: str,
                     flag_values: flags.FlagValues = flags.FLAGS):
  """`--config=FILE[:PRESET]` with `--config.FIELD=VALUE` overrides; locked, so a misspelt field
  fails at once."""
  return config_flags.DEFINE_config_file("config", default, help_text, lock_config=True,
                                         flag_values=flag_values)


def no_extra_args(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go in --config.FIELD=VALUE")


def cpu_device_count() -> int:
  """The CPU devices JAX will create: `jax_num_cpu_devices`, else XLA_FLAGS' forced count, else 1."""
  if jax.config.jax_num_cpu_devices > 0:
    return jax.config.jax_num_cpu_devices
  match = _XLA_COUNT.search(os.environ.get("XLA_FLAGS", ""))
  return int(match.group(1)) if match else 1


def start(distributed: Optional[ml_collections.ConfigDict] = None, *, cpu_devices: int = 1) -> None:
  """Quiets library logs, gives the CPU backend at least `cpu_devices` devices (NUTS runs one
  chain per device, in parallel) and joins a multi-process run (`sharding.
  maybe_initialize_distributed`). Call it first, before anything touches a JAX backend.

  The CPU count is left alone in a multi-process run (the fit is single-process there) and where
  it is already large enough. A fixed mesh such as the cpu/smoke presets' (1, 1, 1) trains on the
  first device only; a mesh with -1 spans all of them.
  """
  metrics.quiet_library_logs()
  settings = distributed.to_dict() if distributed is not None else {}
  multi_process = settings.get("num_processes", 0) > 1 or settings.get("coordinator_address")
  if not multi_process and cpu_devices > cpu_device_count():
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  sharding.maybe_initialize_distributed(**settings)
