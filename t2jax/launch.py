"""The main job: run a checkpoint ladder end to end.

  python -m t2jax.launch --config=configs/ladder.py            # the `cpu` preset
  python -m t2jax.launch --config=configs/ladder.py:smoke --config.workdir=/tmp/smoke
  python -m t2jax.launch --config=configs/ladder.py:gpu --stages=fit,plan,report

Stages run in order (default all): train → eval → fit → plan → validate → report. Each reads and writes files
in the workdir only, so any stage can be rerun alone; rerunning the same command skips finished
rungs and resumes a half-trained one.
"""

import datetime
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata

import jax
import ml_collections
from absl import app, flags

from t2jax import cli, config_check, io, stages as stages_lib

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpyro",
            "ml-collections", "tokenizers")


def define_flags() -> dict:
  return {"config": cli.config_file_flag("configs/ladder.py",
                                         "Ladder config: configs/ladder.py[:PRESET]."),
          "stages": flags.DEFINE_string("stages", ",".join(stages_lib.DEFAULT_STAGES),
                                        "Comma-separated stages to run, in order, from "
                                        f"{','.join(stages_lib.STAGES)} (posttrain only when "
                                        "named).")}


def _git_revision() -> str:
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                         timeout=10, check=True)
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain"], capture_output=True,
                           text=True, timeout=10).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def _versions() -> dict:
  versions = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def write_manifest(config: ml_collections.ConfigDict, workdir: str, stages: list[str]) -> None:
  """Records what ran: config, package versions, devices, git revision, command line."""
  path = os.path.join(workdir, "manifest.json")
  previous = io.read_json(path) if os.path.exists(path) else {}
  manifest = {
      "config": config.to_dict(),
      "versions": _versions(),
      "devices": {"backend": jax.default_backend(), "kind": jax.devices()[0].device_kind,
                  "count": jax.device_count(), "processes": jax.process_count()},
      "git_revision": _git_revision(),
      "command": " ".join(sys.argv),
      "invocations": previous.get("invocations", []) + [
          {"time": datetime.datetime.now().isoformat(timespec="seconds"), "stages": stages}],
  }
  io.write_json(path, manifest)


def run(config: ml_collections.ConfigDict, stages: list[str]) -> None:
  """Validates the whole config (before any file is written), records the manifest, runs `stages`."""
  config_check.validate(config, stages)
  workdir = config.workdir
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    write_manifest(config, workdir, stages)
  print(f"t2jax ladder '{config.preset}' in {workdir}: stages {', '.join(stages)}", flush=True)
  stages_lib.run(config, workdir, stages)


def main(argv, flags_: dict) -> None:
  cli.no_extra_args(argv)
  config = flags_["config"].value
  stages = stages_lib.parse_stages(flags_["stages"].value)
  cli.start(config.distributed, cpu_devices=config.fit.num_chains if "fit" in stages else 1)
  run(config, stages)


if __name__ == "__main__":
  app.run(functools.partial(main, flags_=define_flags()))
