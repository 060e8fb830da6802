"""Builds data/corpus/gutenberg-small from the shared Gutenberg corpus, byte for byte.

  python scripts/make_cpu_corpus.py [--src DIR] [--out DIR] [--train_bytes N] [--shards K]

Train books are taken from the shared train split in the order of sha1(book id), each kept if
it still fits in `--train_bytes` of JSONL; the whole shared val split is copied. Lines are copied
verbatim, shards hold consecutive ids, and xz uses fixed settings, so the same sources and liblzma
give identical files. The sources are checked against the shared SHA256SUMS first.
"""

import argparse
import hashlib
import json
import lzma
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from t2jax import io  # pylint: disable=g-import-not-at-top

SRC = os.path.join(REPO, "..", "shared", "data", "corpus", "gutenberg")
OUT = os.path.join(REPO, "data", "corpus", "gutenberg-small")
XZ = dict(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _check_sources(src: str) -> list[str]:
  """Verifies the source shards against ../../SHA256SUMS; returns the train shard names."""
  sums_path = os.path.join(src, "..", "..", "SHA256SUMS")
  expected = {}
  with open(sums_path, encoding="utf-8") as f:
    for line in f:
      digest, name = line.split()
      if name.startswith("./corpus/gutenberg/"):
        expected[os.path.basename(name)] = digest
  names = sorted(n for n in expected if n.endswith(".jsonl.xz"))
  for name in names:
    got = _sha256(os.path.join(src, name))
    if got != expected[name]:
      raise ValueError(f"{src}/{name}: sha256 {got} != {expected[name]} in {sums_path}; "
                       f"the shipped subset is defined on the listed sources only")
  return [n for n in names if n.startswith("train-")]


def _read_lines(path: str) -> list[tuple[dict, bytes]]:
  """(parsed row without text, raw line) for each line of a .jsonl.xz file."""
  rows = []
  with lzma.open(path, "rb") as f:
    for lineno, line in enumerate(f, 1):
      row = json.loads(line)
      if set(row) != {"id", "author", "title", "text"}:
        raise ValueError(f"{path}:{lineno}: fields {sorted(row)} != [author, id, text, title]")
      del row["text"]
      rows.append((row, line if line.endswith(b"\n") else line + b"\n"))
  return rows


def select_train(rows: list[tuple[dict, bytes]], budget: int) -> list[tuple[dict, bytes]]:
  """Books in sha1(id) order, each kept while the total stays within `budget` bytes; id order."""
  order = sorted(rows, key=lambda r: hashlib.sha1(r[0]["id"].encode()).hexdigest())
  kept, total = [], 0
  for row, line in order:
    if total + len(line) <= budget:
      kept.append((row, line))
      total += len(line)
  return sorted(kept, key=lambda r: r[0]["id"])


def _write_xz(path: str, lines: list[bytes]) -> None:
  with io.atomic_open(path, "wb") as f:
    f.write(lzma.compress(b"".join(lines), **XZ))
  print(f"wrote {path}: {len(lines)} books, {os.path.getsize(path) / 1e6:.1f} MB", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--src", default=SRC, help="shared corpus directory")
  parser.add_argument("--out", default=OUT, help="output directory")
  parser.add_argument("--train_bytes", type=int, default=145_000_000,
                      help="JSONL bytes of train books (about 3.6x the xz size)")
  parser.add_argument("--shards", type=int, default=4, help="number of train shards")
  args = parser.parse_args()

  train_names = _check_sources(args.src)
  rows = [r for name in train_names for r in _read_lines(os.path.join(args.src, name))]
  train = select_train(rows, args.train_bytes)
  val = _read_lines(os.path.join(args.src, "val.jsonl.xz"))

  total = sum(len(line) for _, line in train)
  shards = [[] for _ in range(args.shards)]
  index, start = [], 0
  for row, line in train:
    shard = start * args.shards // total
    shards[shard].append(line)
    index.append(dict(row, split="train", shard=shard, bytes=len(line)))
    start += len(line)
  index += [dict(row, split="val", shard=None, bytes=len(line)) for row, line in val]

  os.makedirs(args.out, exist_ok=True)
  names = []
  for k, lines in enumerate(shards):
    names.append(f"train-{k:02d}-of-{args.shards:02d}.jsonl.xz")
    _write_xz(os.path.join(args.out, names[-1]), lines)
  names.append("val.jsonl.xz")
  _write_xz(os.path.join(args.out, names[-1]), [line for _, line in val])
  io.write_json(os.path.join(args.out, "index.json"), index)
  names.append("index.json")
  io.write_text(os.path.join(args.out, "SHA256SUMS"),
                "".join(f"{_sha256(os.path.join(args.out, n))}  {n}\n" for n in names))
  print(f"train: {len(train)} books, {total / 1e6:.1f} MB JSONL; val: {len(val)} books", flush=True)


if __name__ == "__main__":
  main()
