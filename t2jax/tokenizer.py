"""Tokenizers: HF `tokenizers` JSON files behind a small interface, and small-BPE training."""

import dataclasses
import functools
import hashlib
import os
from typing import Iterable, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from t2jax import io

EOS_TOKEN = "<|endoftext|>"
# Embedding tables are padded to a multiple of 256 (itself a multiple of 128): NeoX-20B's
# 50,277 entries give its published 50,432-row table (50,304 would be the multiple of 128).
VOCAB_PAD_MULTIPLE = 256


def _file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Tokenizer:
  """A loaded tokenizer; `<|endoftext|>` ends every document and pads batches."""

  hf: tokenizers.Tokenizer
  path: str
  sha256: str

  @functools.cached_property
  def eos_id(self) -> int:
    eos = self.hf.token_to_id(EOS_TOKEN)
    if eos is None:
      raise ValueError(f"tokenizer {self.path} has no {EOS_TOKEN!r} token; "
                       f"train one with t2jax.tokenizer.train_bpe or add it as a special token")
    return eos

  @property
  def vocab_size(self) -> int:
    """Raw number of entries, added tokens included."""
    return self.hf.get_vocab_size(with_added_tokens=True)

  @property
  def padded_vocab_size(self) -> int:
    """`vocab_size` rounded up to a multiple of VOCAB_PAD_MULTIPLE (embedding rows)."""
    return -(-self.vocab_size // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE

  def encode(self, text: str) -> list[int]:
    return self.hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    """Encodes many texts on all cores (Rust threads; RAYON_NUM_THREADS caps them), without
    computing character offsets (about twice as fast as `encode_batch` with them)."""
    return [e.ids for e in self.hf.encode_batch_fast(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    """Inverse of `encode`; special tokens are kept as text."""
    return self.hf.decode([int(i) for i in ids], skip_special_tokens=False)


def load_tokenizer(path: str) -> Tokenizer:
  """Loads a HF `tokenizers` JSON file (`~` expanded)."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise ValueError(f"tokenizer file {path} does not exist; point the `tokenizer` config field "
                     f"at a HF tokenizers JSON (e.g. data/tokenizers/gutenberg-bpe2048.json) "
                     f"or build one with scripts/train_tokenizer.py")
  try:
    hf = tokenizers.Tokenizer.from_file(path)
  except Exception as e:
    raise ValueError(f"tokenizer file {path} is not a HF tokenizers JSON ({e})") from e
  tok = Tokenizer(hf=hf, path=path, sha256=_file_sha256(path))
  tok.eos_id  # Fails now, not mid-run, when EOS is missing.
  return tok


def train_bpe(texts: Iterable[str], vocab_size: int, out_path: str) -> Tokenizer:
  """Trains a byte-level BPE with single-digit tokens and `<|endoftext|>` (id 0); writes JSON.

  Every byte is in the alphabet, so any text encodes; digits are split one per token
  before byte-level splitting so numbers are never merged (arithmetic tasks rely on it).
  """
  n_fixed = 1 + len(pre_tokenizers.ByteLevel.alphabet())
  if vocab_size <= n_fixed:
    raise ValueError(f"vocab_size={vocab_size} leaves no room for merges; use more than "
                     f"{n_fixed} (256 bytes + {EOS_TOKEN})")
  hf = tokenizers.Tokenizer(models.BPE())
  hf.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
  ])
  hf.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size,
      special_tokens=[EOS_TOKEN],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False,
  )
  hf.train_from_iterator(texts, trainer=trainer)
  io.write_text(out_path, hf.to_str(pretty=True) + "\n")
  return load_tokenizer(out_path)
