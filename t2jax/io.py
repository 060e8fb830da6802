"""Atomic file writes and JSONL helpers: nothing half-written is ever left behind."""

import contextlib
import json
import math
import os
import tempfile
from typing import Any, Iterable, Iterator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_VERSION = 1  # of every table a run writes (rungs.jsonl, eval.jsonl, results.jsonl)


def resolve_path(path: str) -> str:
  """`~` expanded; a relative path is taken from the repository root (the parent of `t2jax/`)."""
  path = os.path.expanduser(path)
  return path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
  """Opens a temp file beside `path`; renames it over `path` only on success."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _jsonable(x: Any) -> Any:
  """Converts numpy scalars/arrays and non-finite floats to plain JSON values."""
  if hasattr(x, "tolist"):
    x = x.tolist()
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  return x


def write_json(path: str, obj: Any) -> None:
  with atomic_open(path) as f:
    json.dump(_jsonable(obj), f, indent=2, sort_keys=False)
    f.write("\n")


def write_text(path: str, text: str) -> None:
  with atomic_open(path) as f:
    f.write(text)


def write_jsonl(path: str, rows: Iterable[dict]) -> None:
  with atomic_open(path) as f:
    for row in rows:
      f.write(json.dumps(_jsonable(row)) + "\n")


def read_json(path: str) -> Any:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_jsonl_numbered(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, row); a malformed line or a non-object row raises naming file and line."""
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line") from e
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{lineno}: a row must be a JSON object, got {type(row).__name__}")
      yield lineno, row


def read_jsonl(path: str) -> Iterator[dict]:
  """Yields rows; a malformed line raises with the file and line number."""
  for _, row in read_jsonl_numbered(path):
    yield row
