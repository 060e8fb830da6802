"""Training metrics: a JSONL file and TensorBoard event files; console progress lines and durations."""

import json
import os
import sys
import time

from t2jax import io


class MetricsWriter:
  """Appends one JSON object per logged step to `metrics.jsonl` and mirrors scalars to TensorBoard."""

  def __init__(self, directory: str, *, tensorboard: bool = True):
    os.makedirs(directory, exist_ok=True)
    self.path = os.path.join(directory, "metrics.jsonl")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: optional at inference time
      self._tb = SummaryWriter(os.path.join(directory, "tb"))

  def truncate_after(self, step: int) -> None:
    """Drops rows logged after `step` (a resumed run re-logs them), rewriting the file atomically."""
    if not os.path.exists(self.path):
      return
    rows = [r for r in io.read_jsonl(self.path) if r.get("step", 0) <= step]
    io.write_jsonl(self.path, rows)

  def write(self, step: int, scalars: dict) -> None:
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for name, value in scalars.items():
        self._tb.add_scalar(name, float(value), step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def fmt_duration(seconds: float) -> str:
  """A duration for console lines: "5s", "3m07s", "2h05m"."""
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Console lines "{prefix}{unit} {done}/{total}  metrics  eta ..." with the ETA from the rate
  since `start`; at most one line per `every` seconds, and always the last one."""

  def __init__(self, total: int, prefix: str = "", *, unit: str = "step", every: float = 0.0,
               stream=None):
    self.total, self.prefix, self.unit, self.every = total, prefix, unit, every
    self.stream = stream or sys.stdout
    self.start(0)

  def start(self, done: int) -> None:
    """Measures the rate from here (`done` units finished, e.g. the step a run resumed at)."""
    self._t0 = self._last = time.perf_counter()
    self._d0 = done

  def elapsed(self) -> float:
    return time.perf_counter() - self._t0

  def report(self, done: int, **metrics) -> None:
    now = time.perf_counter()
    if done < self.total and now - self._last < self.every:
      return
    self._last = now
    elapsed = now - self._t0
    rate = (done - self._d0) / elapsed if elapsed > 0 and done > self._d0 else 0.0
    eta = fmt_duration((self.total - done) / rate) if rate else "?"
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()]
    print(f"{self.prefix}{self.unit} {done}/{self.total}  " + "".join(p + "  " for p in parts)
          + f"eta {eta}", file=self.stream, flush=True)


def quiet_library_logs() -> None:
  """Keeps orbax's and grain's INFO lines off the console unless `--verbosity` was given."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if "verbosity" not in flags.FLAGS or not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
