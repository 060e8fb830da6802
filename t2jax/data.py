"""Grain pipeline: documents → cached tokens → packed windows → mixed, per-process batches.

Every document is tokenized once, followed by EOS, and the documents are concatenated into one
stream cached as `.npy` under `cache_dir` (later runs memory-map it). A training example is a
window of `seq_len + 1` tokens (inputs and shifted targets) taken at stride `seq_len`, so
documents are packed back to back with EOS between them. Windows are shuffled per epoch,
repeated forever, mixed with synthetic-task windows at the configured rates, and each process
takes every `process_count`-th example of the global stream, so the processes' batches of a step
together hold exactly the global batch a single process would see.
"""

import glob
import hashlib
import itertools
import json
import lzma
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import grain
import ml_collections
import numpy as np

from t2jax import io
from t2jax.tokenizer import Tokenizer

CACHE_VERSION = 1
_SUFFIXES = (".jsonl", ".jsonl.xz")


def default_config() -> ml_collections.ConfigDict:
  """Data settings; relative paths are taken from the repository root. Sequences are tuples so
  that `--config.data.x=...` can override them."""
  cfg = ml_collections.ConfigDict()
  cfg.train_files = ("data/corpus/gutenberg-small/train-*.jsonl.xz",)
  cfg.val_files = ("data/corpus/gutenberg-small/val.jsonl.xz",)
  cfg.text_field = "text"
  cfg.tokenizer = "data/tokenizers/gutenberg-bpe2048.json"
  cfg.seq_len = 256
  cfg.cache_dir = "~/.cache/t2jax/tokens"
  cfg.mixture = ()          # ((task_name, rate), ...): fraction of training sequences per task
  cfg.task_docs = 20_000    # synthetic documents per task in the mixture pool
  cfg.seed = 0              # seed of the task documents (the batch order has its own seed)
  return cfg


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `data.*` field."""
  if not isinstance(cfg.seq_len, int) or cfg.seq_len <= 0:
    raise ValueError(f"data.seq_len={cfg.seq_len!r} must be a positive integer")
  if not isinstance(cfg.text_field, str) or not cfg.text_field:
    raise ValueError(f"data.text_field={cfg.text_field!r} must name a JSON string field, "
                     f"e.g. 'text'")
  for field in ("train_files", "val_files"):
    if not cfg[field]:
      raise ValueError(f"data.{field} is empty; give at least one JSONL(.xz) path or glob")
  pairs = [tuple(m) if isinstance(m, (list, tuple)) else m for m in cfg.mixture]
  _check_rates(pairs, "data.mixture")
  if cfg.mixture and (not isinstance(cfg.task_docs, int) or cfg.task_docs <= 0):
    raise ValueError(f"data.task_docs={cfg.task_docs!r} must be a positive integer when "
                     f"data.mixture is set")


def _check_rates(pairs: Sequence, field: str) -> None:
  for pair in pairs:
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], (int, float))):
      raise ValueError(f"{field}: entry {pair!r} must be a (task_name, rate) pair")
    if not 0 <= pair[1] < 1:
      raise ValueError(f"{field}: rate {pair[1]!r} of task {pair[0]!r} is outside [0, 1); "
                       f"it is the fraction of training sequences drawn from that task")
  total = sum(p[1] for p in pairs)
  if total >= 1:
    raise ValueError(f"{field}: task rates sum to {total:g} >= 1, leaving no corpus; "
                     f"lower them so the corpus gets 1 - sum(rates) > 0")


def resolve_files(patterns: str | Sequence[str], field: str) -> list[str]:
  """Expands paths and globs (sorted matches, duplicates dropped); `field` names the config
  field in errors."""
  patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
  paths = []
  for pattern in patterns:
    matches = sorted(glob.glob(io.resolve_path(pattern)))
    if not matches:
      raise ValueError(f"data.{field}: {pattern!r} matches no file (resolved to "
                       f"{io.resolve_path(pattern)}); fix the path or build the corpus "
                       f"(scripts/make_cpu_corpus.py)")
    for path in matches:
      if not path.endswith(_SUFFIXES):
        raise ValueError(f"data.{field}: {path} is not JSONL; use files ending in {_SUFFIXES}")
      if path not in paths:
        paths.append(path)
  return paths


def read_documents(paths: Sequence[str], text_field: str) -> Iterator[str]:
  """Yields the `text_field` string of every line of JSONL or JSONL.xz files, in order."""
  first = True
  for path in paths:
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
      for lineno, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        text = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(text, str):
          if first:
            fields = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"data.text_field={text_field!r} is not a string field of the first "
                             f"document of {path} (fields: {fields}); set data.text_field to one")
          raise ValueError(f"{path}:{lineno}: no string field {text_field!r}")
        first = False
        yield text


def token_dtype(tokenizer: Tokenizer) -> np.dtype:
  return np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)


def tokenize_documents(texts: Iterable[str], tokenizer: Tokenizer, *, label: str = "documents",
                       chunk_bytes: int = 16 << 20, verbose: bool = True) -> np.ndarray:
  """Tokenizes documents (encode_batch on chunks of about `chunk_bytes`), EOS after each one,
  concatenated into one stream; prints a progress line per chunk when `verbose`."""
  dtype, eos = token_dtype(tokenizer), tokenizer.eos_id
  parts, n_docs, n_bytes, start = [], 0, 0, time.perf_counter()
  texts = iter(texts)
  while True:
    chunk, size = [], 0
    for text in texts:
      chunk.append(text)
      size += len(text)
      if size >= chunk_bytes:
        break
    if not chunk:
      break
    flat = []
    for ids in tokenizer.encode_batch(chunk):
      flat.extend(ids)
      flat.append(eos)
    parts.append(np.asarray(flat, dtype=dtype))
    n_docs += len(chunk)
    n_bytes += sum(len(t.encode("utf-8")) for t in chunk)
    if verbose:
      seconds = time.perf_counter() - start
      print(f"tokenized {label}: {n_docs:,} docs, {n_bytes / 1e6:.1f} MB, "
            f"{sum(map(len, parts)):,} tokens ({n_bytes / 1e6 / seconds:.2f} MB/s)", flush=True)
  return np.concatenate(parts) if parts else np.zeros((0,), dtype)


def _cache_key(paths: Sequence[str], tokenizer: Tokenizer, text_field: str) -> str:
  files = [[os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns] for p in paths]
  blob = json.dumps({"version": CACHE_VERSION, "files": files, "tokenizer": tokenizer.sha256,
                     "text_field": text_field}, sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cached_tokens(cache_dir: str, key: str, make: Callable[[], np.ndarray],
                   meta: dict) -> np.ndarray:
  """Memory-maps `<cache_dir>/tokens-<key>.npy`, first writing `make()` there (atomically)
  with `meta` beside it when missing."""
  path = os.path.join(io.resolve_path(cache_dir), f"tokens-{key}.npy")
  if not os.path.exists(path):
    tokens = make()
    with io.atomic_open(path, "wb") as f:
      np.save(f, tokens)
    io.write_json(path[:-len(".npy")] + ".json",
                  dict(meta, tokens=int(tokens.size), dtype=tokens.dtype.name))
  return np.load(path, mmap_mode="r")


def token_stream(cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, field: str) -> np.ndarray:
  """The cached token stream of `cfg[field]` (`train_files` or `val_files`), memory-mapped."""
  paths = resolve_files(cfg[field], field)
  return _cached_tokens(
      cfg.cache_dir, _cache_key(paths, tokenizer, cfg.text_field),
      lambda: tokenize_documents(read_documents(paths, cfg.text_field), tokenizer, label=field),
      {"files": paths, "text_field": cfg.text_field, "tokenizer": tokenizer.path,
       "tokenizer_sha256": tokenizer.sha256})


def task_stream(cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, name: str,
                documents: Iterable[str]) -> np.ndarray:
  """Token stream of a task's documents, cached under a hash of their text and the tokenizer."""
  docs = list(documents)
  h = hashlib.sha256(f"{CACHE_VERSION}/{tokenizer.sha256}/{len(docs)}".encode())
  for doc in docs:
    h.update(hashlib.sha256(doc.encode("utf-8")).digest())
  return _cached_tokens(
      cfg.cache_dir, h.hexdigest()[:24],
      lambda: tokenize_documents(docs, tokenizer, label=f"task {name}", verbose=False),
      {"task": name, "documents": len(docs), "tokenizer": tokenizer.path,
       "tokenizer_sha256": tokenizer.sha256})


class _Windows(Sequence):
  """Window i is tokens[i·L : i·L + L + 1] as int32 (L = seq_len)."""

  def __init__(self, tokens: np.ndarray, seq_len: int):
    self._tokens, self._seq_len = tokens, seq_len

  def __len__(self) -> int:
    return (len(self._tokens) - 1) // self._seq_len

  def __getitem__(self, i: int) -> np.ndarray:
    if not 0 <= i < len(self):
      raise IndexError(f"window {i} out of range [0, {len(self)})")
    start = i * self._seq_len
    return np.asarray(self._tokens[start:start + self._seq_len + 1], dtype=np.int32)


def packed_sequences(tokens: np.ndarray, seq_len: int, source: str) -> grain.MapDataset:
  """Windows of `seq_len + 1` tokens at stride `seq_len`; `source` names the stream in errors."""
  if (len(tokens) - 1) // seq_len < 1:
    raise ValueError(f"{source}: {len(tokens):,} tokens make no window of data.seq_len + 1 = "
                     f"{seq_len + 1}; add documents or lower data.seq_len")
  return grain.MapDataset.source(_Windows(tokens, seq_len))


def _derive_seed(seed: int, name: str) -> int:
  """A 32-bit seed per stream, so that streams (and nearby seeds) do not share permutations."""
  digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=4).digest()
  return int.from_bytes(digest, "big")


def mix_sequences(corpus: grain.MapDataset, tasks: Sequence[tuple[str, grain.MapDataset, float]],
                  seed: int) -> grain.MapDataset:
  """Endless stream: each source shuffled afresh every epoch, tasks mixed in at their rates and
  the corpus at 1 - sum(rates) (grain's deterministic weighted interleave)."""
  _check_rates([(name, rate) for name, _, rate in tasks], "mixture")
  streams = [corpus.shuffle(seed=_derive_seed(seed, "corpus")).repeat()]
  weights = [1.0 - sum(rate for _, _, rate in tasks)]
  for name, windows, rate in tasks:
    if rate > 0:
      streams.append(windows.shuffle(seed=_derive_seed(seed, f"task/{name}")).repeat())
      weights.append(rate)
  return streams[0] if len(streams) == 1 else grain.MapDataset.mix(streams, weights)


def task_sources(cfg: ml_collections.ConfigDict, task_options: Mapping | None = None
                 ) -> list[tuple[str, Iterator[str], float]]:
  """(name, the first `task_docs` training documents, rate) for each `data.mixture` entry;
  `task_options` (the run's `tasks` block) sets each task's knobs."""
  from t2jax import tasks  # pylint: disable=g-import-not-at-top  (tasks are optional here)
  options = task_options or {}
  return [(name, itertools.islice(tasks.get_task(name, options.get(name)).train_documents(cfg.seed),
                                  cfg.task_docs), float(rate)) for name, rate in cfg.mixture]


def make_train_dataset(cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, *, seed: int,
                       mixture_sources: Sequence[tuple[str, Iterable[str], float]] | None = None
                       ) -> grain.MapDataset:
  """The endless global stream of training windows (int32 [seq_len + 1]).

  `mixture_sources` ((name, documents, rate), ...) replaces the tasks named in `data.mixture`.
  Task documents are packed like the corpus.
  """
  validate_config(cfg)
  corpus = packed_sequences(token_stream(cfg, tokenizer, "train_files"), cfg.seq_len,
                            "data.train_files")
  sources = task_sources(cfg) if mixture_sources is None else mixture_sources
  tasks = [(name, packed_sequences(task_stream(cfg, tokenizer, name, docs), cfg.seq_len,
                                    f"task {name!r} documents"), rate)
           for name, docs, rate in sources]
  return mix_sequences(corpus, tasks, seed)


def make_train_iterator(cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, *,
                        global_batch_size: int, seed: int, process_index: int = 0,
                        process_count: int = 1,
                        mixture_sources: Sequence[tuple[str, Iterable[str], float]] | None = None
                        ) -> grain.DatasetIterator:
  """Endless iterator of this process's int32 [global_batch_size / process_count, seq_len + 1]
  batches; `get_state`/`set_state` (or grain.checkpoint with orbax) resume it exactly."""
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                     f"process_count={process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, {process_count})")
  ds = make_train_dataset(cfg, tokenizer, seed=seed, mixture_sources=mixture_sources)
  ds = ds[process_index::process_count].batch(global_batch_size // process_count,
                                               drop_remainder=True)
  options = grain.ReadOptions(num_threads=1, prefetch_buffer_size=4)
  return iter(ds.to_iter_dataset(options))


def make_eval_batches(cfg: ml_collections.ConfigDict, tokenizer: Tokenizer, *, batch_size: int,
                      max_batches: int) -> list[np.ndarray]:
  """Up to `max_batches` int32 [batch_size, seq_len + 1] validation batches of distinct windows
  spread evenly over the whole validation stream (the same list on every call)."""
  validate_config(cfg)
  if batch_size <= 0 or max_batches <= 0:
    raise ValueError(f"batch_size={batch_size} and max_batches={max_batches} must be positive")
  windows = _Windows(token_stream(cfg, tokenizer, "val_files"), cfg.seq_len)
  n = min(max_batches, len(windows) // batch_size)
  if n == 0:
    raise ValueError(f"data.val_files: {len(windows)} windows of data.seq_len + 1 = "
                     f"{cfg.seq_len + 1} tokens do not fill one eval batch of {batch_size}; "
                     f"add validation documents or lower the batch size or data.seq_len")
  index = np.arange(n * batch_size) * len(windows) // (n * batch_size)
  rows = np.stack([windows[int(i)] for i in index])
  return list(rows.reshape(n, batch_size, cfg.seq_len + 1))


def unigram_entropy(tokens: np.ndarray) -> float:
  """Entropy (nats/token) of the stream's token frequencies: the loss of the best model that
  ignores context, a baseline for a trained model's loss."""
  counts = np.bincount(np.asarray(tokens).ravel())
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())
