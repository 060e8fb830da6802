"""Tokenizer loading, byte-level BPE training, and the shipped tokenizer files."""

import json
import lzma
import os
import random

import pytest

from t2jax import io
from t2jax import tokenizer as tok_lib

WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from",
         "home", "where", "old", "trees", "grow", "tall")


def _texts(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))).capitalize() + "."
          for _ in range(n)] + ["In 1886 there were 12 cats; 7+8=15.", "Café ☃ naïve\n\tend"]


@pytest.fixture(scope="module")
def small_tok(tmp_path_factory):
  return tok_lib.train_bpe(_texts(300), 300, str(tmp_path_factory.mktemp("tok") / "bpe.json"))


def test_train_bpe_properties(small_tok):
  assert small_tok.eos_id == 0
  assert small_tok.hf.id_to_token(0) == tok_lib.EOS_TOKEN
  assert 257 < small_tok.vocab_size <= 300
  assert small_tok.padded_vocab_size == 512
  assert len(small_tok.sha256) == 64 and os.path.isfile(small_tok.path)


@pytest.mark.parametrize("text", [
    "the cat sat on the mat", "  leading and trailing  \n\n", "Unseen wörds: ζ, ☃, 漢字, emoji 🙂",
    "tabs\tand\r\nnewlines", "a <|endoftext|> b", ""])
def test_roundtrip(small_tok, text):
  assert small_tok.decode(small_tok.encode(text)) == text


def test_special_token_in_text_encodes_to_eos(small_tok):
  assert small_tok.encode("a<|endoftext|>b").count(small_tok.eos_id) == 1


def test_digits_are_single_tokens(small_tok):
  text = "In 1886, 12345+678=13023 and 2024."
  pieces = [small_tok.decode([i]) for i in small_tok.encode(text)]
  assert "".join(pieces) == text
  digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
  assert digit_pieces == list("188612345678130232024")


def test_encode_batch_matches_encode(small_tok):
  texts = _texts(50, seed=1)
  assert small_tok.encode_batch(texts) == [small_tok.encode(t) for t in texts]


def test_training_is_deterministic(tmp_path, small_tok):
  again = tok_lib.train_bpe(_texts(300), 300, str(tmp_path / "again.json"))
  assert again.sha256 == small_tok.sha256


def test_train_bpe_rejects_tiny_vocab(tmp_path):
  with pytest.raises(ValueError, match="vocab_size=200"):
    tok_lib.train_bpe(["abc"], 200, str(tmp_path / "t.json"))


def test_load_errors(tmp_path, small_tok):
  with pytest.raises(ValueError, match="does not exist"):
    tok_lib.load_tokenizer(str(tmp_path / "missing.json"))
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(ValueError, match="not a HF tokenizers JSON"):
    tok_lib.load_tokenizer(str(tmp_path / "bad.json"))
  spec = json.loads(small_tok.hf.to_str())
  spec["added_tokens"] = []
  spec["model"]["vocab"] = {k: v for k, v in spec["model"]["vocab"].items()
                            if k != tok_lib.EOS_TOKEN}
  (tmp_path / "no_eos.json").write_text(json.dumps(spec))
  with pytest.raises(ValueError, match="no '<|endoftext|>' token"):
    tok_lib.load_tokenizer(str(tmp_path / "no_eos.json"))


def test_shipped_neox():
  tok = tok_lib.load_tokenizer(io.resolve_path("data/tokenizers/neox-20b.json"))
  assert (tok.vocab_size, tok.padded_vocab_size, tok.eos_id) == (50277, 50432, 0)
  assert tok.encode("Hello world") == [12092, 1533]


def test_shipped_bpe2048_on_shipped_val():
  """Reads the first documents of the shipped validation split (the one test that does)."""
  tok = tok_lib.load_tokenizer(io.resolve_path("data/tokenizers/gutenberg-bpe2048.json"))
  assert (tok.vocab_size, tok.padded_vocab_size, tok.eos_id) == (2048, 2048, 0)
  with lzma.open(io.resolve_path("data/corpus/gutenberg-small/val.jsonl.xz"), "rt") as f:
    texts = [json.loads(next(f))["text"][:20_000] for _ in range(3)]
  for text, ids in zip(texts, tok.encode_batch(texts)):
    assert tok.decode(ids) == text
    assert 2.5 < len(text.encode()) / len(ids) < 5  # bytes per token of a 2k English BPE
