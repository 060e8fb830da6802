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

import ctypes
import os
import re
import sys
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


def reuse_freed_memory() -> None:
  """Keeps glibc from handing large freed blocks back to the kernel.

  XLA:CPU allocates each executable's temporaries as one block per call (~107 MiB for a cpu-60k
  train step, 51 MiB for the smoke preset's), above glibc's largest mmap threshold: every step
  mmaps it, the kernel zero-fills each page on first touch (~27,000 page faults a step: a third of
  a CPU rung's time was system time) and munmaps it at the end. One never-trimmed heap lets the next
  step reuse the block; numerics are unchanged (benchmarks/RESULTS.md). Call it before JAX starts
  its threads. Left alone off Linux, with T2JAX_SYSTEM_MALLOC=1, or where the user tunes malloc.
  """
  if (not sys.platform.startswith("linux") or os.environ.get("T2JAX_SYSTEM_MALLOC")
      or any(key.startswith("MALLOC_") for key in os.environ)
      or "malloc" in os.environ.get("GLIBC_TUNABLES", "") or os.environ.get("LD_PRELOAD")):
    return
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return
  m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8  # glibc's <malloc.h> parameter numbers
  mallopt(m_arena_max, 1)  # XLA's threads share the main heap, so the block is reused across them
  mallopt(m_mmap_max, 0)  # large blocks come from the heap, not from mmap
  mallopt(m_trim_threshold, 2**31 - 1)  # and the heap is not trimmed back to the kernel


def start(distributed: Optional[ml_collections.ConfigDict] = None, *, cpu_devices: int = 1) -> None:
  """Reuses freed host memory (`reuse_freed_memory`), quiets library logs, gives the CPU backend
  at least `cpu_devices` devices (NUTS runs one chain per device, in parallel) and joins a
  multi-process run (`sharding.maybe_initialize_distributed`). Call it first, before anything
  touches a JAX backend.

  The CPU count is left alone in a multi-process run (the fit is single-process there) and where
  it is already large enough. A fixed mesh such as the cpu/smoke presets' (1, 1, 1) trains on the
  first device only; a mesh with -1 spans all of them.
  """
  reuse_freed_memory()
  metrics.quiet_library_logs()
  settings = distributed.to_dict() if distributed is not None else {}
  multi_process = settings.get("num_processes", 0) > 1 or settings.get("coordinator_address")
  if not multi_process and cpu_devices > cpu_device_count():
    jax.config.update("jax_num_cpu_devices", int(cpu_devices))
  sharding.maybe_initialize_distributed(**settings)
