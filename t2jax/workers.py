"""Ladder worker processes: each trains and evaluates the rungs its launcher sends it, on one core.

Tiny CPU models gain little from XLA's intra-op threads, so a CPU
ladder runs `ladder.workers` of these, one rung each at a time. `Pool` (in the launcher) starts
`python -m t2jax.workers` with single-threaded XLA in its environment; the worker pins itself to
its core and arranges to die with the launcher before it imports JAX.

Protocol: the launcher writes JSON lines to the worker's stdin: first `{"config": <base64 pickle>,
"workdir": ...}`, then one `{"rung": id, "train": bool, "eval": bool}` per job; EOF stops it. The
worker answers on the file descriptor in `T2JAX_WORKER_FD` with `{"event": "ready" | "done" |
"error", "rung": id, "traceback": ...}` lines. Its stdout and stderr are forwarded line by line.
"""

import base64
import ctypes
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from typing import Callable, Iterable

SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false"
_PR_SET_PDEATHSIG, _SIGKILL = 1, 9


def worker_env(core: int) -> dict:
  """The environment of a worker on `core`: the launcher's, with single-threaded XLA CPU."""
  env = dict(os.environ, T2JAX_LAUNCHER_PID=str(os.getpid()), T2JAX_WORKER_CORE=str(core))
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA}".strip()
  import jax  # the launcher's CPU device count (cli.start may have raised it) carries over
  if jax.config.jax_num_cpu_devices > 0:
    env["JAX_NUM_CPU_DEVICES"] = str(jax.config.jax_num_cpu_devices)
  return env


class WorkerError(RuntimeError):
  pass


class Pool:
  """`n` worker processes on the cores this process may use, one per core (round robin)."""

  def __init__(self, n: int, config, workdir: str):
    cores = sorted(os.sched_getaffinity(0))
    self.events: queue.Queue = queue.Queue()
    self.procs, self.jobs, self.threads = [], [None] * n, []
    header = json.dumps({"config": base64.b64encode(pickle.dumps(config)).decode(),
                         "workdir": workdir}) + "\n"
    try:
      for i in range(n):
        read_fd, write_fd = os.pipe()
        env = dict(worker_env(cores[i % len(cores)]), T2JAX_WORKER_FD=str(write_fd))
        # Started from this (the main) thread: PR_SET_PDEATHSIG follows the thread that forks.
        proc = subprocess.Popen([sys.executable, "-m", "t2jax.workers"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(write_fd,), text=True, bufsize=1)
        os.close(write_fd)
        self.procs.append(proc)
        for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
          self.threads.append(threading.Thread(target=_forward, args=(stream, out), daemon=True))
          self.threads[-1].start()
        threading.Thread(target=self._listen, args=(i, os.fdopen(read_fd)), daemon=True).start()
        proc.stdin.write(header)
    except BaseException:
      self.close(kill=True)
      raise

  def _listen(self, i: int, messages) -> None:
    for line in messages:
      self.events.put((i, json.loads(line)))
    self.events.put((i, {"event": "exit"}))

  def run(self, jobs: Iterable[dict], on_start: Callable[[dict], None],
          on_done: Callable[[dict], None]) -> None:
    """Runs `jobs` in order, each on the next free worker; `on_start(job)` as it is sent and
    `on_done(job)` as it finishes. A job that fails stops them all: WorkerError names its rung."""
    pending = list(jobs)
    idle = 0
    while idle < len(self.procs):
      i, msg = self.events.get()
      job = self.jobs[i]
      if msg["event"] == "error":
        raise WorkerError(f"rung {msg['rung']} failed in ladder worker {i} "
                          f"(pid {self.procs[i].pid}):\n{msg['traceback']}")
      if msg["event"] == "exit":
        if self.procs[i].stdin.closed:  # it had finished its jobs
          continue
        rc = self.procs[i].wait()
        where = f"while on rung {job['rung']}" if job else "before taking a rung"
        raise WorkerError(f"ladder worker {i} (pid {self.procs[i].pid}) exited with status {rc} "
                          f"{where}; its output is above")
      if msg["event"] == "done":
        on_done(job)
      if pending:
        self.jobs[i] = pending.pop(0)
        on_start(self.jobs[i])
        self.procs[i].stdin.write(json.dumps(self.jobs[i]) + "\n")
      else:
        self.jobs[i] = None
        self.procs[i].stdin.close()
        idle += 1

  def close(self, kill: bool = False) -> None:
    """Waits for the workers to finish (they stop at the end of their input), or kills them."""
    for proc in self.procs:
      if kill:
        proc.kill()
      elif not proc.stdin.closed:
        proc.stdin.close()
    for proc in self.procs:
      proc.wait()
    for thread in self.threads:
      thread.join()


def _forward(stream, out) -> None:
  for line in stream:
    out.write(line)
    out.flush()


def _serve(run_job: Callable[[dict], None], reply) -> None:
  def send(**msg):
    reply.write(json.dumps(msg) + "\n")
    reply.flush()

  send(event="ready")
  for line in sys.stdin:
    job = json.loads(line)
    try:
      run_job(job)
    except BaseException:  # pylint: disable=broad-except  (reported to the launcher, then exit)
      send(event="error", rung=job["rung"], traceback=traceback.format_exc())
      sys.exit(1)
    send(event="done", rung=job["rung"])


def _detach_from_launcher_or_die() -> None:
  """SIGKILL when the launcher dies (Linux prctl), and exit now if it already has; pin the core."""
  ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
  if os.getppid() != int(os.environ["T2JAX_LAUNCHER_PID"]):
    os._exit(1)
  os.sched_setaffinity(0, {int(os.environ["T2JAX_WORKER_CORE"])})


def main() -> None:
  _detach_from_launcher_or_die()
  from t2jax import cli, ladder, metrics  # pylint: disable=g-import-not-at-top  (JAX after pinning)
  cli.reuse_freed_memory()  # before XLA starts its threads, as in every entry point
  metrics.quiet_library_logs()
  header = json.loads(sys.stdin.readline())
  config = pickle.loads(base64.b64decode(header["config"]))
  runner = ladder.RungRunner(config, header["workdir"])
  with os.fdopen(int(os.environ["T2JAX_WORKER_FD"]), "w") as reply:
    _serve(lambda job: runner.run(job["rung"], train=job["train"], evaluate=job["eval"]), reply)


if __name__ == "__main__":
  main()
