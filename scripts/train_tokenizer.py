"""Trains the shipped byte-level BPE on the CPU corpus's train split.

  python scripts/train_tokenizer.py [--vocab_size 2048] [--files GLOB ...] [--out PATH]

Defaults rebuild data/tokenizers/gutenberg-bpe2048.json from data/corpus/gutenberg-small
(training is deterministic: same corpus and `tokenizers` version, same file). Prints the
bytes per token and the unigram entropy of the validation split under the new tokenizer.
"""

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from t2jax import data, io, tokenizer  # pylint: disable=g-import-not-at-top


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--vocab_size", type=int, default=2048)
  parser.add_argument("--files", nargs="+", default=list(data.default_config().train_files),
                      help="JSONL(.xz) paths or globs to train on")
  parser.add_argument("--val_files", nargs="+", default=list(data.default_config().val_files))
  parser.add_argument("--text_field", default="text")
  parser.add_argument("--out", default=None,
                      help="default: data/tokenizers/gutenberg-bpe<vocab_size>.json")
  args = parser.parse_args()
  out = args.out or io.resolve_path(f"data/tokenizers/gutenberg-bpe{args.vocab_size}.json")

  start = time.perf_counter()
  docs = data.read_documents(data.resolve_files(args.files, "files"), args.text_field)
  tok = tokenizer.train_bpe(docs, args.vocab_size, out)
  print(f"wrote {out} (vocab {tok.vocab_size}, sha256 {tok.sha256}) in "
        f"{time.perf_counter() - start:.0f} s", flush=True)

  val = list(data.read_documents(data.resolve_files(args.val_files, "val_files"), args.text_field))
  tokens = data.tokenize_documents(val, tok, label="val")
  n_bytes = sum(len(t.encode("utf-8")) for t in val)
  print(f"val: {len(tokens):,} tokens, {n_bytes / len(tokens):.3f} bytes/token, unigram entropy "
        f"{data.unigram_entropy(tokens):.4f} nats/token, max id {int(np.max(tokens))}", flush=True)


if __name__ == "__main__":
  main()
