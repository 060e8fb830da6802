"""Data pipeline: token cache, packing, shuffling, mixture, sharding, resume, eval batches."""

import itertools
import json
import lzma
import math
import os
import random

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from t2jax import data, io
from t2jax import tokenizer as tok_lib

WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from",
         "home", "where", "old", "trees", "grow", "tall", "river", "stone")
SEQ_LEN = 16


def _docs(n: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) + "."
          for _ in range(n)]


class FakeArithmetic:
  """Stands in for a t2jax.tasks Task: endless digit-only documents."""

  def train_documents(self, seed: int):
    rng = random.Random(seed)
    while True:
      a, b = rng.randint(0, 99), rng.randint(0, 99)
      yield f"{a}+{b}={a + b}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Two train files (plain and xz) and a val file, a tokenizer, and a config pointing at them."""
  root = tmp_path_factory.mktemp("corpus")
  docs_a, docs_b, docs_val = _docs(120, 0), _docs(80, 1), _docs(60, 2)
  with open(root / "train-a.jsonl", "w") as f:
    f.writelines(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs_a))
  with lzma.open(root / "train-b.jsonl.xz", "wt") as f:
    f.writelines(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs_b))
  with open(root / "val.jsonl", "w") as f:
    f.writelines(json.dumps({"body": d}) + "\n" for d in docs_val)
  tok = tok_lib.train_bpe(docs_a + ["0123456789+="], 320, str(root / "tok.json"))
  cfg = data.default_config()
  cfg.train_files = (str(root / "train-*"),)
  cfg.val_files = (str(root / "val.jsonl"),)
  cfg.text_field = "body"
  cfg.tokenizer = tok.path
  cfg.seq_len = SEQ_LEN
  cfg.cache_dir = str(root / "cache")
  return cfg, tok, docs_a + docs_b, docs_val


def _reference_stream(tok, docs):
  return np.array([t for d in docs for t in tok.encode(d) + [tok.eos_id]])


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_token_stream_matches_reference_and_is_cached(corpus, monkeypatch):
  cfg, tok, docs, _ = corpus
  stream = data.token_stream(cfg, tok, "train_files")
  assert stream.dtype == np.uint16
  np.testing.assert_array_equal(stream, _reference_stream(tok, docs))
  cached = [p for p in os.listdir(cfg.cache_dir) if p.endswith(".npy")]
  assert len(cached) == 1
  meta = json.load(open(os.path.join(cfg.cache_dir, cached[0][:-4] + ".json")))
  assert meta["tokens"] == len(stream) and meta["tokenizer_sha256"] == tok.sha256

  def fail(*args, **kwargs):
    raise AssertionError("re-tokenized although the cache is valid")
  monkeypatch.setattr(data, "tokenize_documents", fail)
  again = data.token_stream(cfg, tok, "train_files")
  assert isinstance(again, np.memmap)
  np.testing.assert_array_equal(again, stream)


def test_cache_key_follows_files_and_field(corpus, tmp_path):
  cfg, tok, _, _ = corpus
  path = tmp_path / "one.jsonl"
  path.write_text(json.dumps({"body": "a cat", "text": "a dog"}) + "\n")
  keys = {data._cache_key([str(path)], tok, "body"), data._cache_key([str(path)], tok, "text")}
  os.utime(path, ns=(1, 1))
  keys.add(data._cache_key([str(path)], tok, "body"))
  assert len(keys) == 3


def test_packed_windows(corpus):
  cfg, tok, _, _ = corpus
  stream = data.token_stream(cfg, tok, "train_files")
  windows = data.packed_sequences(stream, SEQ_LEN, "test")
  assert len(windows) == (len(stream) - 1) // SEQ_LEN
  for i in (0, 1, len(windows) - 1):
    np.testing.assert_array_equal(windows[i], stream[i * SEQ_LEN:(i + 1) * SEQ_LEN + 1])
    assert windows[i].dtype == np.int32
  # Consecutive windows overlap in one token: the last target is the next window's first input.
  assert windows[0][-1] == windows[1][0]
  with pytest.raises(ValueError, match="lower data.seq_len"):
    data.packed_sequences(stream[:SEQ_LEN], SEQ_LEN, "tiny")


def test_epochs_are_permutations_reshuffled_each_epoch(corpus):
  cfg, tok, _, _ = corpus
  stream = data.token_stream(cfg, tok, "train_files")
  windows = data.packed_sequences(stream, SEQ_LEN, "test")
  n = len(windows)
  all_windows = sorted(tuple(w) for w in windows)
  batch = 4
  it = data.make_train_iterator(cfg, tok, global_batch_size=batch, seed=3)
  rows = [tuple(r) for b in _take(it, math.ceil(2 * n / batch) + 1) for r in b]
  first, second = rows[:n], rows[n:2 * n]
  assert sorted(first) == all_windows and sorted(second) == all_windows
  assert first != second
  assert first != [tuple(w) for w in windows]


def test_batches_shape_and_seed(corpus):
  cfg, tok, _, _ = corpus
  a = _take(data.make_train_iterator(cfg, tok, global_batch_size=8, seed=0), 5)
  b = _take(data.make_train_iterator(cfg, tok, global_batch_size=8, seed=0), 5)
  c = _take(data.make_train_iterator(cfg, tok, global_batch_size=8, seed=1), 5)
  assert all(x.shape == (8, SEQ_LEN + 1) and x.dtype == np.int32 for x in a)
  np.testing.assert_array_equal(np.stack(a), np.stack(b))
  assert not np.array_equal(np.stack(a), np.stack(c))


def test_process_slices_form_the_global_batch(corpus):
  cfg, tok, _, _ = corpus
  steps, global_b, procs = 7, 6, 3
  whole = _take(data.make_train_iterator(cfg, tok, global_batch_size=global_b, seed=5), steps)
  parts = [_take(data.make_train_iterator(cfg, tok, global_batch_size=global_b, seed=5,
                                          process_index=p, process_count=procs), steps)
           for p in range(procs)]
  for step in range(steps):
    assert all(parts[p][step].shape == (global_b // procs, SEQ_LEN + 1) for p in range(procs))
    interleaved = np.stack([parts[p][step] for p in range(procs)], axis=1)
    np.testing.assert_array_equal(interleaved.reshape(global_b, -1), whole[step])
  with pytest.raises(ValueError, match="multiple of process_count=4"):
    data.make_train_iterator(cfg, tok, global_batch_size=6, seed=0, process_count=4)


def test_get_state_set_state_resume(corpus):
  cfg, tok, _, _ = corpus
  it = data.make_train_iterator(cfg, tok, global_batch_size=4, seed=7)
  _take(it, 9)
  state = it.get_state()
  expected = _take(it, 6)
  fresh = data.make_train_iterator(cfg, tok, global_batch_size=4, seed=7)
  fresh.set_state(state)
  np.testing.assert_array_equal(np.stack(_take(fresh, 6)), np.stack(expected))


def test_orbax_checkpoint_manager_resume(corpus, tmp_path):
  cfg, tok, _, _ = corpus
  it = data.make_train_iterator(cfg, tok, global_batch_size=4, seed=11)
  _take(it, 5)
  with ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",)) as manager:
    manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
  expected = _take(it, 4)
  fresh = data.make_train_iterator(cfg, tok, global_batch_size=4, seed=11)
  with ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",)) as manager:
    assert manager.latest_step() == 5
    manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  np.testing.assert_array_equal(np.stack(_take(fresh, 4)), np.stack(expected))


def _has_digit(tok, row) -> bool:
  return any(c.isdigit() for c in tok.decode(row))


def test_mixture_rates_and_task_windows(corpus):
  cfg, tok, _, _ = corpus
  docs = list(itertools.islice(FakeArithmetic().train_documents(0), 300))
  sources = [("fake", iter(docs), 0.25)]
  it = data.make_train_iterator(cfg, tok, global_batch_size=16, seed=0, mixture_sources=sources)
  rows = np.concatenate(_take(it, 50))
  is_task = np.array([_has_digit(tok, r) for r in rows])
  assert abs(is_task.mean() - 0.25) < 0.01
  task_windows = {tuple(w) for w in data.packed_sequences(
      data.tokenize_documents(docs, tok, verbose=False), SEQ_LEN, "fake")}
  assert all(tuple(r) in task_windows for r in rows[is_task])
  # The corpus has no digits, so corpus rows hold no task tokens.
  corpus_windows = {tuple(w) for w in data.packed_sequences(
      data.token_stream(cfg, tok, "train_files"), SEQ_LEN, "corpus")}
  assert all(tuple(r) in corpus_windows for r in rows[~is_task])


def test_task_stream_is_cached_by_content(corpus, monkeypatch):
  cfg, tok, _, _ = corpus
  docs = list(itertools.islice(FakeArithmetic().train_documents(1), 50))
  stream = data.task_stream(cfg, tok, "fake", iter(docs))
  np.testing.assert_array_equal(stream, _reference_stream(tok, docs))
  monkeypatch.setattr(data, "tokenize_documents", lambda *a, **k: np.zeros(3, np.uint16))
  np.testing.assert_array_equal(data.task_stream(cfg, tok, "fake", docs), stream)
  assert len(data.task_stream(cfg, tok, "fake", docs[:-1])) == 3  # other documents: new entry


def test_mixture_from_config_uses_task_registry(corpus, monkeypatch):
  from t2jax import tasks  # pylint: disable=g-import-not-at-top
  cfg, tok, _, _ = corpus
  calls = []

  def get_task(name, options):
    calls.append((name, options))
    return FakeArithmetic()
  monkeypatch.setattr(tasks, "get_task", get_task)
  cfg = cfg.copy_and_resolve_references()
  cfg.mixture = (("fake", 0.5),)
  cfg.task_docs = 200
  [(name, docs, rate)] = data.task_sources(cfg, {"fake": {"max_value": 5}})
  assert (calls, name, rate) == ([("fake", {"max_value": 5})], "fake", 0.5)
  assert len(list(docs)) == 200
  rows = np.concatenate(_take(data.make_train_iterator(cfg, tok, global_batch_size=8, seed=0), 25))
  assert abs(np.mean([_has_digit(tok, r) for r in rows]) - 0.5) < 0.01


def test_eval_batches(corpus):
  cfg, tok, _, docs_val = corpus
  stream = _reference_stream(tok, docs_val)
  n_windows = (len(stream) - 1) // SEQ_LEN
  batches = data.make_eval_batches(cfg, tok, batch_size=4, max_batches=3)
  again = data.make_eval_batches(cfg, tok, batch_size=4, max_batches=3)
  assert len(batches) == 3 and all(b.shape == (4, SEQ_LEN + 1) for b in batches)
  np.testing.assert_array_equal(np.stack(batches), np.stack(again))
  rows = np.concatenate(batches)
  starts = [next(s for s in range(0, n_windows * SEQ_LEN, SEQ_LEN)
                 if np.array_equal(stream[s:s + SEQ_LEN + 1], r)) for r in rows]
  assert starts == sorted(set(starts)) and starts[-1] > n_windows * SEQ_LEN // 2
  everything = data.make_eval_batches(cfg, tok, batch_size=4, max_batches=10**6)
  assert len(everything) == n_windows // 4


@pytest.mark.parametrize("field, value, match", [
    ("seq_len", 0, "data.seq_len=0"),
    ("mixture", (("arithmetic", 1.0),), "rate 1.0 of task 'arithmetic'"),
    ("mixture", (("arithmetic", -0.1),), "outside \\[0, 1\\)"),
    ("mixture", (("a", 0.6), ("b", 0.5)), "sum to 1.1"),
    ("mixture", (("a",),), "must be a \\(task_name, rate\\) pair"),
    ("train_files", ("/nonexistent/*.jsonl",), "data.train_files: '/nonexistent/\\*.jsonl'"),
    ("text_field", "content", "data.text_field='content'.*fields: \\['body', 'id'\\]"),
])
def test_config_errors(corpus, field, value, match):
  cfg, tok, _, _ = corpus
  cfg = cfg.copy_and_resolve_references()
  cfg[field] = value
  with pytest.raises(ValueError, match=match):
    data.make_train_iterator(cfg, tok, global_batch_size=4, seed=0)


def test_non_jsonl_file_is_rejected(tmp_path, corpus):
  cfg, _, _, _ = corpus
  (tmp_path / "notes.txt").write_text("hello")
  with pytest.raises(ValueError, match="data.val_files: .*notes.txt is not JSONL"):
    data.resolve_files((str(tmp_path / "*.txt"),), "val_files")


def test_unigram_entropy_exact():
  assert data.unigram_entropy(np.array([5, 5, 5])) == 0.0
  assert data.unigram_entropy(np.array([0, 1, 2, 3] * 5, np.uint16)) == pytest.approx(math.log(4))
  p = np.array([0.5, 0.25, 0.25])
  assert data.unigram_entropy(np.array([0, 0, 1, 2])) == pytest.approx(-(p * np.log(p)).sum())


def test_default_config_points_at_shipped_files():
  cfg = data.default_config()
  data.validate_config(cfg)
  train = data.resolve_files(cfg.train_files, "train_files")
  assert [os.path.basename(p) for p in train] == [f"train-{k:02d}-of-04.jsonl.xz" for k in range(4)]
  assert len(data.resolve_files(cfg.val_files, "val_files")) == 1
  assert os.path.isfile(io.resolve_path(cfg.tokenizer))
  assert io.resolve_path("~/x") == os.path.expanduser("~/x")
