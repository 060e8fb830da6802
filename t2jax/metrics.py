"""Training metrics: a JSONL file, TensorBoard event files, and a console progress line."""

import json
import os
import sys
import time
from typing import Optional

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


def _fmt_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """One console line per report: step, metrics, and an ETA from the recent step rate."""

  def __init__(self, total_steps: int, prefix: str = "", stream=None):
    self.total = total_steps
    self.prefix = prefix
    self.stream = stream or sys.stdout
    self._t0: Optional[float] = None
    self._s0 = 0

  def start(self, step: int) -> None:
    self._t0, self._s0 = time.perf_counter(), step

  def report(self, step: int, **metrics) -> None:
    if self._t0 is None:
      self.start(step)
    elapsed = time.perf_counter() - self._t0
    rate = (step - self._s0) / elapsed if elapsed > 0 and step > self._s0 else 0.0
    eta = _fmt_seconds((self.total - step) / rate) if rate else "?"
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()]
    print(f"{self.prefix}step {step}/{self.total}  " + "  ".join(parts) + f"  eta {eta}",
          file=self.stream, flush=True)


def quiet_library_logs() -> None:
  """Keeps orbax's and grain's INFO lines off the console unless `--verbosity` was given."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if "verbosity" not in flags.FLAGS or not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
