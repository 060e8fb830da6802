"""Jitted batched KV-cache sampler: k samples per prompt, the prompt prefilled once.

For a batch of Q questions the left-padded prompts (length bucketed, see `bucket_length`) are run
through the model once (`Transformer.prefill`). Their KV cache is then shared, not copied: each
decode step, a `Transformer.decode` call, attends from the `k_chunk` samples of a question to that
question's single prompt cache and to the samples' own cache of generated tokens, in one
`lax.while_loop` that exits when every sequence has stopped or `max_new_tokens` tokens are out.
Sample j of question q draws from `fold_in(fold_in(key, question_ids[q]), j)`, so results do not
depend on batching, chunking or sharding. Stops: EOS, and stop strings through a token-level
automaton (`StopTable`) that also catches stop strings spanning several tokens; the decoded text is
cut before the first stop string afterwards.

Memory per decode chunk (B = q_batch·k_chunk rows, P prompt bucket, T = max_new_tokens, bytes of
`model.dtype`; n_layers·2·d_model·bytes per cached token):
  prompt cache     Q·P·n_layers·2·d_model·bytes (one copy per question, shared by its samples)
  generated cache  B·(T−1)·n_layers·2·d_model·bytes
  logits           ~4·B·V·4 bytes (temperature, top-p sort, softmax)
  attention        ~3·B·n_heads·(P+T)·4 bytes per layer (scores and probabilities)
`score` holds batch_size·L·V·4 bytes of logits (L the bucketed prompt+answer length).
"""

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from t2jax import sharding as sharding_lib
from t2jax.model import ModelConfig, Transformer, init_cache, logical_specs

DEFAULT_ROWS = 256  # decode rows per chunk when q_batch is not given
_NEG_INF = -jnp.inf


def bucket_length(n: int) -> int:
  """Prompt bucket: the next power of two >= 16 up to 128, then the next multiple of 128."""
  if n <= 128:
    return max(16, 1 << max(0, n - 1).bit_length())
  return -(-n // 128) * 128


def truncate_at_stop(text: str, stop_strings: Sequence[str]) -> str:
  """`text` cut before the earliest occurrence of any stop string."""
  cut = min((i for i in (text.find(s) for s in stop_strings if s) if i >= 0), default=len(text))
  return text[:cut]


def _pad_batches(seqs: Sequence[Sequence[int]], size: int, pad_id: int, left: bool):
  """Batches of `size` sequences, each padded to the `bucket_length` of its longest, on the left
  or the right; the last batch is filled with copies of its first row.

  Yields (start, n_real, rows, tokens_BxL, lengths_B): `rows` the sequence index of each row.
  """
  for start in range(0, len(seqs), size):
    rows = list(range(start, min(start + size, len(seqs))))
    n_real = len(rows)
    rows += [rows[0]] * (size - n_real)
    lengths_B = np.array([len(seqs[r]) for r in rows], np.int32)
    length = bucket_length(int(lengths_B.max()))
    tokens_BxL = np.full((size, length), pad_id, np.int32)
    for i, r in enumerate(rows):
      if left:
        tokens_BxL[i, length - lengths_B[i]:] = seqs[r]
      else:
        tokens_BxL[i, :lengths_B[i]] = seqs[r]
    yield start, n_real, rows, tokens_BxL, lengths_B


@dataclasses.dataclass(frozen=True)
class StopTable:
  """Aho-Corasick automaton over tokens: the state is the longest suffix of the generated text that
  is a prefix of a stop string; `match_SxV[s, t]` says appending token t completes a stop string."""
  next_SxV: np.ndarray  # int32
  match_SxV: np.ndarray  # bool


def build_stop_table(token_texts: Sequence[str], stop_strings: Sequence[str]) -> StopTable:
  """The automaton for `stop_strings`, from the decoded text of every token id."""
  stops = tuple(s for s in stop_strings if s)
  prefixes = sorted({""} | {s[:i] for s in stops for i in range(len(s))}, key=lambda p: (len(p), p))
  index = {p: i for i, p in enumerate(prefixes)}
  n_states = -(-len(prefixes) // 8) * 8  # unused padding states, so few shapes compile
  next_SxV = np.zeros((n_states, len(token_texts)), np.int32)
  match_SxV = np.zeros((n_states, len(token_texts)), bool)
  stop_chars = set("".join(stops))
  # A token with none of the stop characters resets to state 0 without a match; only the rest
  # (and empty texts, which keep the state) need the string work.
  relevant = [t for t, text in enumerate(token_texts) if not text or stop_chars & set(text)]
  for s, prefix in enumerate(prefixes):
    for t in relevant:
      text = prefix + token_texts[t]
      if any(stop in text for stop in stops):
        match_SxV[s, t] = True
      else:
        next_SxV[s, t] = max((index[p] for p in prefixes if text.endswith(p)),
                             key=lambda i: len(prefixes[i]))
  return StopTable(next_SxV, match_SxV)


def filter_top_p(logits_BxV: jax.Array, top_p: float) -> jax.Array:
  """Keeps the smallest set of most likely tokens whose probability reaches `top_p` (ties kept)."""
  sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
  n_keep_B = jnp.sum(mass_before_BxV < top_p, axis=-1)
  threshold_Bx1 = jnp.take_along_axis(sorted_BxV, n_keep_B[:, None] - 1, axis=-1)
  return jnp.where(logits_BxV >= threshold_Bx1, logits_BxV, _NEG_INF)


def sample_next(logits_BxV: jax.Array, keys_B: jax.Array, temperature: float,
                top_p: float) -> jax.Array:
  """One token per row: argmax when temperature is 0, else temperature/top-p sampling."""
  if temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = logits_BxV / temperature
  if top_p < 1:
    logits_BxV = filter_top_p(logits_BxV, top_p)
  return jax.vmap(jax.random.categorical)(keys_B, logits_BxV).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Generated ids; row [q, j, :lengths[q, j]] is sample j of prompt q (stop token included)."""
  tokens_QxKxT: np.ndarray
  lengths_QxK: np.ndarray
  stopped_QxK: np.ndarray  # True where EOS or a stop string ended the sample


@dataclasses.dataclass(frozen=True)
class _Setup:
  """What the jitted functions depend on besides arrays; hashable, so a static argument and
  samplers with equal setups share compiled code."""
  cfg: ModelConfig
  eos_id: int
  n_real_vocab: int  # logits of the padding rows beyond it are masked out
  mesh: Optional[Mesh]

  def shard_rows(self, x):
    """Splits the leading (row) dimension over the mesh's batch axes."""
    if self.mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, sharding_lib.batch_sharding(self.mesh))

  def replicate(self, tree):
    """Small outputs come back replicated, so every host can read them."""
    if self.mesh is None:
      return tree
    return jax.lax.with_sharding_constraint(tree, sharding_lib.replicated(self.mesh))

  def mask_vocab(self, logits_xV):
    valid_V = jnp.arange(logits_xV.shape[-1]) < self.n_real_vocab
    return jnp.where(valid_V, logits_xV, _NEG_INF)


@functools.partial(jax.jit, static_argnames=("setup",))
def _prefill(setup: _Setup, params, tokens_QxP, positions_QxP, kv_mask_QxP):
  """The prompts' KV cache and the (vocab-masked) logits after their last token."""
  logits_QxPxV, prompt = Transformer(setup.cfg).apply(
      {"params": params}, tokens_QxP, positions_QxP, kv_mask_QxP, method="prefill")
  return prompt, setup.mask_vocab(logits_QxPxV[:, -1])


@functools.partial(jax.jit, static_argnames=(
    "setup", "k_chunk", "max_new_tokens", "temperature", "top_p", "stop_on_eos"))
def _decode(setup: _Setup, params, prompt_cache, last_logits_QxV, prompt_len_Q, kv_mask_QxP,
            question_ids_Q, sample_offset, key, next_SxV, match_SxV, *, k_chunk, max_new_tokens,
            temperature, top_p, stop_on_eos):
  """`k_chunk` continuations of each prefilled prompt: tokens, lengths and stop flags."""
  kc, t_max, eos = k_chunk, max_new_tokens, setup.eos_id
  q, _ = kv_mask_QxP.shape
  b = q * kc
  rep = lambda x: setup.shard_rows(jnp.repeat(x, kc, axis=0))  # noqa: E731  row q·kc + j
  model = Transformer(setup.cfg)
  # The prompt cache is read, never copied per sample; generated tokens get max(1, T-1) slots.
  gen = jax.tree.map(setup.shard_rows, init_cache(setup.cfg, b, max(1, t_max - 1)))
  prompt_len_B = rep(prompt_len_Q)
  sample_ids_B = jnp.tile(sample_offset + jnp.arange(kc, dtype=jnp.int32), q)
  keys_B = jax.vmap(lambda qi, j: jax.random.fold_in(jax.random.fold_in(key, qi), j))(
      rep(question_ids_Q), sample_ids_B)

  def emit(i, logits_BxV, tokens_BxT, state_B, done_B, lengths_B):
    step_keys_B = jax.vmap(jax.random.fold_in, (0, None))(keys_B, i)
    tok_B = jnp.where(done_B, eos, sample_next(logits_BxV, step_keys_B, temperature, top_p))
    tokens_BxT = tokens_BxT.at[:, i].set(tok_B)
    stop_B = match_SxV[state_B, tok_B]
    if stop_on_eos:
      stop_B |= tok_B == eos
    lengths_B = jnp.where(done_B, lengths_B, i + 1)
    return tokens_BxT, next_SxV[state_B, tok_B], done_B | stop_B, lengths_B, stop_B & ~done_B

  zeros_B = jnp.zeros((b,), jnp.int32)
  tokens_BxT, state_B, done_B, lengths_B, stopped_B = emit(
      0, rep(last_logits_QxV), jnp.full((b, t_max), eos, jnp.int32), zeros_B,
      jnp.zeros((b,), bool), zeros_B)

  def cond(carry):
    i, _, _, _, done_B, _, _ = carry
    return (i < t_max) & ~jnp.all(done_B)

  def body(carry):
    i, gen, tokens_BxT, state_B, done_B, lengths_B, stopped_B = carry
    logits_Bx1xV, gen = model.apply(
        {"params": params}, tokens_BxT[:, i - 1, None], (prompt_len_B + i - 1)[:, None],
        prompt_cache, kv_mask_QxP, gen, i - 1, method="decode")
    tokens_BxT, state_B, done_B, lengths_B, new_stop_B = emit(
        i, setup.mask_vocab(logits_Bx1xV[:, 0]), tokens_BxT, state_B, done_B, lengths_B)
    return i + 1, gen, tokens_BxT, state_B, done_B, lengths_B, stopped_B | new_stop_B

  carry = (jnp.int32(1), gen, tokens_BxT, state_B, done_B, lengths_B, stopped_B)
  _, _, tokens_BxT, _, _, lengths_B, stopped_B = jax.lax.while_loop(cond, body, carry)
  return setup.replicate((tokens_BxT.reshape(q, kc, t_max), lengths_B.reshape(q, kc),
                          stopped_B.reshape(q, kc)))


@functools.partial(jax.jit, static_argnames=("setup",))
def _score(setup: _Setup, params, tokens_BxL, target_mask_BxL):
  """Summed NLL of the tokens where `target_mask` is set, each predicted from its prefix."""
  logits_BxLxV = setup.mask_vocab(Transformer(setup.cfg).apply({"params": params}, tokens_BxL))
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV[:, :-1], axis=-1)
  nll_BxL = -jnp.take_along_axis(logp_BxLxV, tokens_BxL[:, 1:, None], axis=-1)[..., 0]
  mask_BxL = target_mask_BxL[:, 1:]
  return setup.replicate((jnp.sum(jnp.where(mask_BxL, nll_BxL, 0.0), axis=-1),
                          jnp.sum(mask_BxL, axis=-1)))


def _check_sampling_args(k, max_new_tokens, temperature, top_p, k_chunk, q_batch):
  for name, value in (("k", k), ("max_new_tokens", max_new_tokens)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"sampler: {name}={value!r} must be a positive integer")
  for name, value in (("k_chunk", k_chunk), ("q_batch", q_batch)):
    if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
      raise ValueError(f"sampler: {name}={value!r} must be None or a positive integer")
  if temperature < 0:
    raise ValueError(f"sampler: temperature={temperature} must be >= 0 (0 = greedy)")
  if not 0 < top_p <= 1:
    raise ValueError(f"sampler: top_p={top_p} must be in (0, 1]")


class Sampler:
  """Samples completions and scores gold answers with one model.

  Prompt ids are `[eos] + encode(prompt)` when `prepend_eos` (training documents follow an EOS in
  the packed stream, so this is the context the model saw), else `encode(prompt)`.
  """

  def __init__(self, model_cfg: ModelConfig, params, tokenizer, mesh: Optional[Mesh] = None,
               prepend_eos: bool = True):
    self.cfg = model_cfg
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.prepend_eos = prepend_eos
    self.eos_id = int(tokenizer.eos_id)
    self.n_real_vocab = int(tokenizer.vocab_size)
    if self.n_real_vocab > model_cfg.vocab_size:
      raise ValueError(f"tokenizer {getattr(tokenizer, 'path', '')} has {self.n_real_vocab} tokens "
                       f"but model.vocab_size={model_cfg.vocab_size}; use the tokenizer the model "
                       "was trained with (padded_vocab_size rows)")
    if mesh is not None:
      shardings = sharding_lib.logical_to_sharding(logical_specs(model_cfg), mesh)
      params = jax.device_put(params, shardings)
    self.params = params
    self._divisor = 1 if mesh is None else sharding_lib.batch_divisor(mesh)
    self._setup = _Setup(model_cfg, self.eos_id, self.n_real_vocab, mesh)
    self._stop_tables: dict = {}
    self._token_texts: Optional[list] = None

  def encode(self, prompts: Sequence[str]) -> list[list[int]]:
    prefix = [self.eos_id] if self.prepend_eos else []
    return [prefix + ids for ids in self.tokenizer.encode_batch(list(prompts))]

  def stop_table(self, stop_strings: Sequence[str]) -> StopTable:
    key = tuple(stop_strings)
    if key not in self._stop_tables:
      if self._token_texts is None:
        self._token_texts = [self.tokenizer.decode([t]) for t in range(self.n_real_vocab)]
        self._token_texts += [""] * (self.cfg.vocab_size - self.n_real_vocab)
      self._stop_tables[key] = build_stop_table(self._token_texts, key)
    return self._stop_tables[key]

  def _put(self, x: np.ndarray, shard: bool):
    if self.mesh is None:
      return jnp.asarray(x)
    sh = sharding_lib.batch_sharding(self.mesh) if shard else sharding_lib.replicated(self.mesh)
    return jax.device_put(x, sh)

  # ---------------------------------------------------------------- public API
  def _batch_plan(self, n_prompts: int, k: int, k_chunk: Optional[int], q_batch: Optional[int]):
    """(q_batch, k_chunk, n_chunks): balanced chunks of k; q_batch·k_chunk divisible by the mesh."""
    n_chunks = -(-k // min(k_chunk or k, k))
    kc = -(-k // n_chunks)
    qb = min(q_batch or max(1, DEFAULT_ROWS // kc), n_prompts)
    while (qb * kc) % self._divisor:
      qb += 1
    return qb, kc, n_chunks

  def sample_tokens(self, prompt_ids: Sequence[Sequence[int]], k: int, *, key: jax.Array,
                    max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                    stop_strings: Sequence[str] = (), stop_on_eos: bool = True,
                    k_chunk: Optional[int] = None, q_batch: Optional[int] = None,
                    question_ids: Optional[Sequence[int]] = None,
                    on_batch: Optional[Callable[[int, int], None]] = None) -> SampleOutput:
    """k samples of up to `max_new_tokens` tokens for each token-id prompt.

    Prompts go in batches of `q_batch` (default DEFAULT_ROWS // k_chunk), each prefilled once;
    the k samples in ceil(k / k_chunk) balanced chunks (default: all k at once). `question_ids`
    (default 0..Q-1, taken mod 2^31) are folded into `key` with the sample index to seed each
    sample.
    `on_batch(prompts_done, tokens_generated)` is called after each batch of prompts.
    """
    _check_sampling_args(k, max_new_tokens, temperature, top_p, k_chunk, q_batch)
    n = len(prompt_ids)
    if n == 0:
      raise ValueError("sampler: no prompts given")
    question_ids = np.arange(n) if question_ids is None else np.asarray(question_ids, np.int64)
    if question_ids.shape != (n,):
      raise ValueError(f"sampler: question_ids has shape {question_ids.shape}; give one per prompt "
                       f"({n})")
    for i, ids in enumerate(prompt_ids):
      if not len(ids):
        raise ValueError(f"sampler: prompt {i} has no tokens; give a non-empty prompt or use "
                         "prepend_eos=True")
      if len(ids) + max_new_tokens > self.cfg.max_seq_len:
        raise ValueError(f"sampler: prompt {i} has {len(ids)} tokens + max_new_tokens="
                         f"{max_new_tokens} > model.max_seq_len={self.cfg.max_seq_len}; shorten "
                         "the prompt or lower max_new_tokens")
    qb, kc, n_chunks = self._batch_plan(n, k, k_chunk, q_batch)
    table = self.stop_table(stop_strings)
    next_SxV, match_SxV = self._put(table.next_SxV, False), self._put(table.match_SxV, False)
    shard_prefill = qb % self._divisor == 0
    out_tokens = np.zeros((n, n_chunks * kc, max_new_tokens), np.int32)
    out_lengths = np.zeros((n, n_chunks * kc), np.int32)
    out_stopped = np.zeros((n, n_chunks * kc), bool)
    for start, m, rows, tokens_QxP, lens_Q in _pad_batches(prompt_ids, qb, self.eos_id, left=True):
      p = tokens_QxP.shape[1]
      pad_Qx1 = (p - lens_Q)[:, None]
      positions_QxP = np.maximum(np.arange(p)[None] - pad_Qx1, 0).astype(np.int32)
      kv_mask_QxP = np.arange(p)[None] >= pad_Qx1
      put = functools.partial(self._put, shard=shard_prefill)
      cache, last_logits = _prefill(self._setup, self.params, put(tokens_QxP), put(positions_QxP),
                                    put(kv_mask_QxP))
      qids = self._put((question_ids[rows] & 0x7FFFFFFF).astype(np.int32), False)
      for c in range(n_chunks):
        tok, length, stopped = _decode(
            self._setup, self.params, cache, last_logits, self._put(lens_Q, False),
            put(kv_mask_QxP), qids, jnp.int32(c * kc), key, next_SxV,
            match_SxV, k_chunk=kc, max_new_tokens=max_new_tokens, temperature=float(temperature),
            top_p=float(top_p), stop_on_eos=stop_on_eos)
        sl = slice(c * kc, (c + 1) * kc)
        out_tokens[start:start + m, sl] = np.asarray(tok)[:m]
        out_lengths[start:start + m, sl] = np.asarray(length)[:m]
        out_stopped[start:start + m, sl] = np.asarray(stopped)[:m]
      if on_batch is not None:
        on_batch(start + m, int(out_lengths[start:start + m, :k].sum()))
    return SampleOutput(out_tokens[:, :k], out_lengths[:, :k], out_stopped[:, :k])

  def generate(self, prompts: Sequence[str], k: int, *, key: jax.Array, max_new_tokens: int,
               temperature: float = 1.0, top_p: float = 1.0,
               stop_strings: Sequence[str] = ("\n",), k_chunk: Optional[int] = None,
               q_batch: Optional[int] = None,
               question_ids: Optional[Sequence[int]] = None) -> list[list[str]]:
    """k completions per prompt: text after the prompt, cut before EOS and the first stop string."""
    out = self.sample_tokens(self.encode(prompts), k, key=key, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, stop_strings=stop_strings,
                             k_chunk=k_chunk, q_batch=q_batch, question_ids=question_ids)
    return [[self.decode_completion(out.tokens_QxKxT[q, j, :out.lengths_QxK[q, j]], stop_strings)
             for j in range(k)] for q in range(len(prompts))]

  def decode_completion(self, ids: Sequence[int], stop_strings: Sequence[str]) -> str:
    ids = list(ids)
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return truncate_at_stop(self.tokenizer.decode(ids), stop_strings)

  def score(self, prompts: Sequence[str], answers: Sequence[str],
            batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Gold-answer NLL by teacher forcing: per pair, (summed NLL in nats, answer token count).

    The sequence is `encode(prompt) + tokenizer.encode(answer)`, the prompt ids the sampler uses.
    """
    if len(prompts) != len(answers):
      raise ValueError(f"score: {len(prompts)} prompts but {len(answers)} answers; pass one each")
    if batch_size < 1:
      raise ValueError(f"score: batch_size={batch_size} must be positive")
    prompt_ids = self.encode(prompts)
    answer_ids = self.tokenizer.encode_batch(list(answers))
    for i, (p_ids, a_ids) in enumerate(zip(prompt_ids, answer_ids)):
      if not a_ids:
        raise ValueError(f"score: answer {i} ({answers[i]!r}) encodes to no tokens; give a "
                         "non-empty gold answer")
      if not p_ids:
        raise ValueError(f"score: prompt {i} has no tokens; give a non-empty prompt or use "
                         "prepend_eos=True")
      if len(p_ids) + len(a_ids) > self.cfg.max_seq_len:
        raise ValueError(f"score: prompt {i} + answer have {len(p_ids) + len(a_ids)} tokens > "
                         f"model.max_seq_len={self.cfg.max_seq_len}; shorten them")
    n = len(prompts)
    bs = min(batch_size, n)
    bs = -(-bs // self._divisor) * self._divisor
    nll, counts = np.zeros(n, np.float64), np.zeros(n, np.int64)
    seqs = [p_ids + a_ids for p_ids, a_ids in zip(prompt_ids, answer_ids)]
    for start, m, rows, tokens_BxL, lens_B in _pad_batches(seqs, bs, self.eos_id, left=False):
      prompt_lens_Bx1 = np.array([len(prompt_ids[r]) for r in rows])[:, None]
      positions_L = np.arange(tokens_BxL.shape[1])
      mask_BxL = (positions_L >= prompt_lens_Bx1) & (positions_L < lens_B[:, None])
      total_B, count_B = _score(self._setup, self.params, self._put(tokens_BxL, True),
                                self._put(mask_BxL, True))
      nll[start:start + m] = np.asarray(total_B, np.float64)[:m]
      counts[start:start + m] = np.asarray(count_B)[:m]
    return nll, counts
