"""Jitted batched KV-cache sampler: k samples per prompt, the prompt prefilled once.

For a batch of Q questions the left-padded prompts (length bucketed, see `bucket_length`) are run
through the model once. Their KV cache is then shared, not copied: each decode step attends from
the `k_chunk` samples of a question to that question's single prompt cache and to the samples' own
cache of generated tokens, in one `lax.while_loop` that exits when every sequence has stopped or
`max_new_tokens` tokens are out. Sample j of question q draws from
`fold_in(fold_in(key, question_ids[q]), j)`, so results do not depend on batching, chunking or
sharding. Stops: EOS, and stop strings through a token-level automaton (`StopTable`) that also
catches stop strings spanning several tokens; the decoded text is cut before the first stop string
afterwards.

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
from t2jax.model import (MLP, ModelConfig, RMSNorm, Transformer, init_cache, logical_specs,
                         rope)

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
  q, p = tokens_QxP.shape
  cache = init_cache(setup.cfg, q, p)
  logits_QxPxV, cache = Transformer(setup.cfg).apply(
      {"params": params}, tokens_QxP, positions_QxP, cache, 0, kv_mask_QxP, method="decode")
  return cache, setup.mask_vocab(logits_QxPxV[:, -1])


def _attend(q_BxHxK, prefix_k_QxHxPxK, prefix_v_QxHxPxK, prefix_mask_BxP, gen_k_BxHxTxK,
            gen_v_BxHxTxK, gen_mask_T):
  """One query per row over its question's shared prompt cache and its own generated cache, with
  one fp32 softmax across both. Row b belongs to question b // (B / Q)."""
  b, h, k = q_BxHxK.shape
  nq, _, p, _ = prefix_k_QxHxPxK.shape
  kc = b // nq
  q_QxHxJxK = q_BxHxK.reshape(nq, kc, h, k).transpose(0, 2, 1, 3)
  prefix_QxHxJxP = jnp.einsum("qhjk,qhpk->qhjp", q_QxHxJxK, prefix_k_QxHxPxK,
                              preferred_element_type=jnp.float32)
  gen_BxHxT = jnp.einsum("bhk,bhtk->bht", q_BxHxK, gen_k_BxHxTxK,
                         preferred_element_type=jnp.float32)
  logits_BxHxS = jnp.concatenate(
      [prefix_QxHxJxP.transpose(0, 2, 1, 3).reshape(b, h, p), gen_BxHxT], axis=-1) * k ** -0.5
  mask_BxS = jnp.concatenate(
      [prefix_mask_BxP, jnp.broadcast_to(gen_mask_T, (b, gen_mask_T.shape[0]))], axis=-1)
  logits_BxHxS = jnp.where(mask_BxS[:, None], logits_BxHxS, jnp.finfo(jnp.float32).min)
  probs_BxHxS = jax.nn.softmax(logits_BxHxS, axis=-1).astype(q_BxHxK.dtype)
  probs_QxHxJxP = probs_BxHxS[..., :p].reshape(nq, kc, h, p).transpose(0, 2, 1, 3)
  out_QxHxJxK = jnp.einsum("qhjp,qhpk->qhjk", probs_QxHxJxP, prefix_v_QxHxPxK)
  out_BxHxK = jnp.einsum("bht,bhtk->bhk", probs_BxHxS[..., p:], gen_v_BxHxTxK)
  return out_QxHxJxK.transpose(0, 2, 1, 3).reshape(b, h, k) + out_BxHxK


def _decode_step(cfg: ModelConfig, params, tok_B, pos_B, slot, prefix, prefix_mask_BxP, gen):
  """Logits after feeding one token per row, whose K/V go to slot `slot` of the generated cache.

  The same computation as `Transformer.decode` (model.Block's wiring; the cached-greedy test checks
  it against the full forward), but the prompt cache stays one copy per question.
  """
  dtype = jnp.dtype(cfg.dtype)
  gen_mask_T = jnp.arange(gen[0]["k"].shape[2]) <= slot
  x_BxD = jnp.take(params["embedding"], tok_B, axis=0).astype(dtype)
  new_gen = []
  for layer, (pre, cache) in enumerate(zip(prefix, gen)):
    p = params[f"block_{layer}"]
    h_BxD = RMSNorm().apply({"params": p["attn_norm"]}, x_BxD)
    proj = lambda name: jnp.einsum(  # noqa: E731
        "bd,dhk->bhk", h_BxD, p["attn"][name]["kernel"].astype(dtype))
    q_BxHxK, k_BxHxK = (rope(proj(name)[:, None], pos_B[:, None], cfg.rope_theta)[:, 0]
                        for name in ("query", "key"))
    cache = {name: jax.lax.dynamic_update_slice_in_dim(cache[name], new_BxHxK[:, :, None], slot,
                                                       axis=2)
             for name, new_BxHxK in (("k", k_BxHxK), ("v", proj("value")))}  # all in cfg.dtype
    attn_BxHxK = _attend(q_BxHxK, pre["k"], pre["v"], prefix_mask_BxP, cache["k"], cache["v"],
                         gen_mask_T)
    x_BxD = x_BxD + jnp.einsum("bhk,hkd->bd", attn_BxHxK, p["attn"]["out"]["kernel"].astype(dtype))
    x_BxD = x_BxD + MLP(cfg).apply({"params": p["mlp"]},
                                   RMSNorm().apply({"params": p["mlp_norm"]}, x_BxD))
    new_gen.append(cache)
  logits_Bx1xV = Transformer(cfg).apply({"params": params}, x_BxD[:, None],
                                        method=lambda model, x: model._logits(x))
  return logits_Bx1xV[:, 0], new_gen


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

  # The prompt cache is read, never copied per sample: [Q, H, P, K] (heads first, so the
  # attention matmuls need no per-step transpose); generated tokens get [B, H, T-1, K].
  prefix = jax.tree.map(lambda x_QxPxHxK: x_QxPxHxK.transpose(0, 2, 1, 3), prompt_cache)
  gen_shape = (b, setup.cfg.n_heads, max(1, t_max - 1), setup.cfg.head_dim)
  gen = [{name: setup.shard_rows(jnp.zeros(gen_shape, layer["k"].dtype)) for name in ("k", "v")}
         for layer in prompt_cache]
  prefix_mask_BxP = rep(kv_mask_QxP)
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
    logits_BxV, gen = _decode_step(setup.cfg, params, tokens_BxT[:, i - 1], prompt_len_B + i - 1,
                                   i - 1, prefix, prefix_mask_BxP, gen)
    tokens_BxT, state_B, done_B, lengths_B, new_stop_B = emit(
        i, setup.mask_vocab(logits_BxV), tokens_BxT, state_B, done_B, lengths_B)
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
    for start in range(0, n, qb):
      rows = list(range(start, min(start + qb, n)))
      rows += [rows[0]] * (qb - len(rows))  # pad the last batch with copies (dropped below)
      lens_Q = np.array([len(prompt_ids[r]) for r in rows], np.int32)
      p = bucket_length(int(lens_Q.max()))
      tokens_QxP = np.full((qb, p), self.eos_id, np.int32)
      for i, r in enumerate(rows):
        tokens_QxP[i, p - lens_Q[i]:] = prompt_ids[r]
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
        m = min(qb, n - start)
        sl = slice(c * kc, (c + 1) * kc)
        out_tokens[start:start + m, sl] = np.asarray(tok)[:m]
        out_lengths[start:start + m, sl] = np.asarray(length)[:m]
        out_stopped[start:start + m, sl] = np.asarray(stopped)[:m]
      if on_batch is not None:
        done = min(start + qb, n)
        on_batch(done, int(out_lengths[start:done, :k].sum()))
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
    for start in range(0, n, bs):
      rows = list(range(start, min(start + bs, n)))
      rows += [rows[0]] * (bs - len(rows))
      lengths = [len(prompt_ids[r]) + len(answer_ids[r]) for r in rows]
      length = bucket_length(max(lengths))
      tokens_BxL = np.full((bs, length), self.eos_id, np.int32)
      mask_BxL = np.zeros((bs, length), bool)
      for i, r in enumerate(rows):
        seq = prompt_ids[r] + answer_ids[r]
        tokens_BxL[i, :len(seq)] = seq
        mask_BxL[i, len(prompt_ids[r]):len(seq)] = True
      total_B, count_B = _score(self._setup, self.params, self._put(tokens_BxL, True),
                                     self._put(mask_BxL, True))
      m = min(bs, n - start)
      nll[start:start + m] = np.asarray(total_B, np.float64)[:m]
      counts[start:start + m] = np.asarray(count_B)[:m]
    return nll, counts
