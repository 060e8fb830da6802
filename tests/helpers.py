"""Shared test utilities: loading ladder presets and building a tiny corpus."""

import importlib.util
import json
import lzma
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ladder_config(preset: str):
  """`configs/ladder.py:PRESET`, loaded as `--config` would load it."""
  spec = importlib.util.spec_from_file_location("ladder_presets", os.path.join(REPO, "configs", "ladder.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def write_tiny_corpus(root, train_chars: int = 300_000, val_chars: int = 60_000) -> None:
  """`train.jsonl` and `val.jsonl` of 20k-character documents cut from two shipped validation books."""
  with lzma.open(os.path.join(REPO, "data/corpus/gutenberg-small/val.jsonl.xz"), "rt") as f:
    books = [json.loads(next(f))["text"] for _ in range(2)]
  for name, text in (("train.jsonl", books[0][:train_chars]), ("val.jsonl", books[1][:val_chars])):
    with open(os.path.join(root, name), "w") as f:
      for i in range(0, len(text), 20_000):
        f.write(json.dumps({"text": text[i:i + 20_000]}) + "\n")
