"""The main job: run a checkpoint ladder end to end.

  python -m t2jax.launch --config=configs/ladder.py            # the `cpu` preset
  python -m t2jax.launch --config=configs/ladder.py:smoke --config.workdir=/tmp/smoke
  python -m t2jax.launch --config=configs/ladder.py:gpu --stages=fit,plan,report

Stages run in order (default all): train → eval → fit → plan → report. Each reads and writes files
in the workdir only, so any stage can be rerun alone; rerunning the same command skips finished
rungs and resumes a half-trained one.
"""

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from t2jax import fit, io, ladder, metrics, report, sharding

STAGES = ("train", "eval", "fit", "plan", "report")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpyro",
            "ml-collections", "tokenizers")

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ladder.py",
                                          "Ladder config: configs/ladder.py[:PRESET].",
                                          lock_config=True)
_STAGES = flags.DEFINE_string("stages", ",".join(STAGES), "Comma-separated stages to run, in order.")


def parse_stages(text: str) -> list[str]:
  stages = [s.strip() for s in text.split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    raise ValueError(f"--stages={text!r}: unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
  return sorted(stages, key=STAGES.index)


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
  workdir = config.workdir
  os.makedirs(workdir, exist_ok=True)
  ladder.parse_rungs(config)  # fail on a bad ladder before any work
  if jax.process_index() == 0:
    write_manifest(config, workdir, stages)
  print(f"t2jax ladder '{config.preset}' in {workdir}: stages {', '.join(stages)}", flush=True)
  analysis = [s for s in stages if s in ("fit", "plan", "report")]
  if analysis and jax.process_count() > 1:
    # Other processes would wait at jax's shutdown barrier, which times out on a long fit.
    print(f"skipping {', '.join(analysis)} in this {jax.process_count()}-process run; run "
          f"--stages={','.join(analysis)} afterwards as a single process", flush=True)
    stages = [s for s in stages if s not in analysis]
  for stage in stages:
    print(f"== {stage} ==", flush=True)
    if stage == "train":
      ladder.run_train(config, workdir)
    elif stage == "eval":
      ladder.run_eval(config, workdir)
    elif stage == "fit":
      fit.run_fit(workdir, config.fit)
    elif stage == "plan":
      fit.run_plan(workdir, config.fit)
    elif stage == "report":
      print(f"report: {report.write_report(workdir, config.fit)}", flush=True)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go in --config.FIELD=VALUE")
  config = _CONFIG.value
  metrics.quiet_library_logs()
  sharding.maybe_initialize_distributed(**config.distributed)
  run(config, parse_stages(_STAGES.value))


if __name__ == "__main__":
  app.run(main)
