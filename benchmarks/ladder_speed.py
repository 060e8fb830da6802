"""Ladder stages on 2 cores: one core (`taskset -c 0`, `ladder.workers=1`) vs the default (every usable
core, `ladder.workers` auto: one worker process per core, single-threaded XLA each).

Each case runs `python -m t2jax.launch` on a fresh workdir (token caches prepared beforehand, not
timed) and records wall, user and system time of the launcher and its workers (`os.wait4`), the
system-time share (system / (user + system)) and the speed-up (one core's wall / the default's).

  python benchmarks/ladder_speed.py                          # smoke:train and cpu:train,eval
  python benchmarks/ladder_speed.py --cases=smoke:train --rungs=0,1,2,3  # a quick run
Writes benchmarks/results/ladder_speed.{json,md}.
"""

import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from t2jax import io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
MODES = {"one core": (["taskset", "-c", "0"], ["--config.ladder.workers=1"]), "default": ([], [])}

_CASES = flags.DEFINE_list("cases", ["smoke:train", "cpu:train+eval"],
                           "PRESET:STAGES cases, stages joined by '+'.")
_MODES = flags.DEFINE_list("modes", list(MODES), f"Modes to run, of {list(MODES)}.")
_RUNGS = flags.DEFINE_string("rungs", "", "A subset of rungs (`ladder.only`: ids or indices).")
_OUT = flags.DEFINE_string("out", RESULTS, "Output directory.")


def _load() -> list[float]:
  with open("/proc/loadavg") as f:
    return [float(x) for x in f.read().split()[:3]]


def run_case(preset: str, stages: str, mode: str, workdir: str) -> dict:
  prefix, extra = MODES[mode]
  cmd = [*prefix, sys.executable, "-m", "t2jax.launch", f"--config=configs/ladder.py:{preset}",
         f"--config.workdir={workdir}", f"--stages={stages.replace('+', ',')}", *extra]
  if _RUNGS.value:
    cmd.append(f"--config.ladder.only={_RUNGS.value}")
  load = _load()
  start = time.perf_counter()
  with open(os.path.join(workdir + ".log"), "w") as log:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed (status {status}); see {workdir}.log")
  cpu = usage.ru_utime + usage.ru_stime
  return {"preset": preset, "stages": stages, "mode": mode, "rungs": _RUNGS.value or "all",
          "wall_s": wall, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
          "system_share": usage.ru_stime / cpu if cpu else 0.0, "cpu_per_wall": cpu / wall,
          "load_before": load, "load_after": _load()}


def markdown(rows: list[dict], meta: dict) -> str:
  lines = ["# Ladder stages: one core vs both (worker processes)", "",
           f"{meta['cores']} usable cores; load average (1, 5, 15 min) at the start "
           f"{meta['load_start']}, at the end {meta['load_end']}. Speed-up: one core's wall / "
           "the default's.", "",
           "| preset | stages | rungs | mode | wall s | user s | system s | system share | "
           "CPU/wall | speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    speedup = f"{r['speedup']:.2f}x" if "speedup" in r else ""
    lines.append(f"| {r['preset']} | {r['stages']} | {r['rungs']} | {r['mode']} | "
                 f"{r['wall_s']:.1f} | {r['user_s']:.1f} | {r['system_s']:.1f} | "
                 f"{r['system_share']:.0%} | {r['cpu_per_wall']:.2f} | {speedup} |")
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  del argv
  for mode in _MODES.value:
    if mode not in MODES:
      raise app.UsageError(f"--modes: {mode!r} is not one of {list(MODES)}")
  cases = []
  for case in _CASES.value:
    preset, _, stages = case.partition(":")
    if not stages or not set(stages.split("+")) <= {"train", "eval"}:
      raise app.UsageError(f"--cases: {case!r}: write PRESET:STAGES with STAGES of train, eval "
                           "joined by '+', e.g. cpu:train+eval")
    cases.append((preset, stages))
  meta = {"cores": len(os.sched_getaffinity(0)), "load_start": _load()}
  rows = []
  with tempfile.TemporaryDirectory(prefix="ladder_speed_") as tmp:
    for preset in dict(cases):
      subprocess.run([sys.executable, "launch/prepare_data.py",
                      f"--config=configs/ladder.py:{preset}"], cwd=REPO, check=True,
                     capture_output=True)
    for preset, stages in cases:
      walls = {}
      for mode in _MODES.value:
        row = run_case(preset, stages, mode, os.path.join(tmp, f"{preset}-{stages}-{len(rows)}"))
        walls[mode] = row["wall_s"]
        rows.append(row)
        print(f"{preset} {stages} {mode}: wall {row['wall_s']:.1f}s user {row['user_s']:.1f}s "
              f"system {row['system_s']:.1f}s ({row['system_share']:.0%})", flush=True)
      if len(walls) == 2:
        rows[-1]["speedup"] = walls["one core"] / walls["default"]
  meta["load_end"] = _load()
  os.makedirs(_OUT.value, exist_ok=True)
  io.write_json(os.path.join(_OUT.value, "ladder_speed.json"), {**meta, "rows": rows})
  io.write_text(os.path.join(_OUT.value, "ladder_speed.md"), markdown(rows, meta))
  print(markdown(rows, meta))


if __name__ == "__main__":
  app.run(main)
