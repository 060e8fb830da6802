"""Decoder-only transformer (Flax Linen): RMSNorm, RoPE, SwiGLU, causal attention.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`); `sharding.py`
maps them onto the mesh. Parameters are fp32; activations use `cfg.dtype` (bf16 on accelerators,
fp32 on CPU); softmax and logits are fp32. Sampling is two calls of the model: `prefill` returns
the prompts' KV cache, and each `decode` step attends to it (one copy per question, shared by its
samples) and to a generated-token cache that it returns updated, passed functionally so the
sampler can run the loop inside `lax.while_loop`.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of the decoder. `vocab_size` is the (padded) embedding size."""
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int
  max_seq_len: int
  tie_embeddings: bool = True
  rope_theta: float = 10_000.0
  dtype: str = "float32"
  remat: bool = False
  attention_impl: Optional[str] = None  # None (XLA) or "cudnn" for jax.nn.dot_product_attention

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads

  def validate(self, prefix: str = "model") -> "ModelConfig":
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{prefix}.{name}={value!r}: must be a positive integer")
    if self.d_model % self.n_heads:
      raise ValueError(f"{prefix}.n_heads={self.n_heads} does not divide {prefix}.d_model="
                       f"{self.d_model}; choose n_heads so that d_model/n_heads is an integer")
    if self.head_dim % 2:
      raise ValueError(f"{prefix}.d_model/{prefix}.n_heads={self.head_dim}: RoPE needs an even "
                       "head dimension; change d_model or n_heads")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"{prefix}.dtype={self.dtype!r}: use 'float32' or 'bfloat16'")
    if self.attention_impl not in (None, "xla", "cudnn"):
      raise ValueError(f"{prefix}.attention_impl={self.attention_impl!r}: use None, 'xla' or 'cudnn'")
    return self


def count_params(cfg: ModelConfig) -> dict:
  """Closed-form parameter counts.

  `body` is Kaplan's non-embedding count (blocks + final norm; no embedding, no output head), and
  `non_embedding` is the same number. `N`, the count the laws use, adds the output head (V·D matrix
  work per token, tied or not), so 6·N·D is the training matmul cost.
  """
  d, hk, f, v = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.d_ff, cfg.vocab_size
  per_layer = 2 * d + 4 * d * hk + 3 * d * f
  body = cfg.n_layers * per_layer + d
  embedding = v * d
  head = 0 if cfg.tie_embeddings else v * d
  return {"total": embedding + body + head, "embedding": embedding, "body": body,
          "non_embedding": body, "N": body + v * d}


def _dense_init(fan_in: int, names: tuple) -> Any:
  return nn.with_logical_partitioning(nn.initializers.normal(stddev=fan_in ** -0.5), names)


class RMSNorm(nn.Module):
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * scale).astype(x.dtype)


def rope(x_BxTxHxK: jax.Array, positions_BxT: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding (rotate-half form), computed in fp32."""
  half = x_BxTxHxK.shape[-1] // 2
  freqs_K2 = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BxTxK2 = positions_BxT.astype(jnp.float32)[..., None] * freqs_K2
  sin, cos = jnp.sin(angles_BxTxK2)[:, :, None, :], jnp.cos(angles_BxTxK2)[:, :, None, :]
  x = x_BxTxHxK.astype(jnp.float32)
  x1, x2 = x[..., :half], x[..., half:]
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxTxHxK.dtype)


def _masked_attention(q_BxTxHxK, k_BxSxHxK, v_BxSxHxK, mask_BxTxS):
  """Attention with an explicit boolean mask; fp32 softmax. Used by the prefill."""
  scale = q_BxTxHxK.shape[-1] ** -0.5
  logits_BxHxTxS = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK,
                              preferred_element_type=jnp.float32) * scale
  logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, jnp.finfo(jnp.float32).min)
  probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(v_BxSxHxK.dtype)
  return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)


def _cached_attention(q_BxTxHxK, prompt_k_QxHxPxK, prompt_v_QxHxPxK, prompt_mask_QxP, k_BxHxSxK,
                      v_BxHxSxK, length):
  """T new queries per row over its question's prompt cache (row b belongs to question b // J,
  J = B/Q) and its own generated slots up to its position, `length` + t; one fp32 softmax."""
  b, t, h, k = q_BxTxHxK.shape
  nq, _, p, _ = prompt_k_QxHxPxK.shape
  j, s = b // nq, k_BxHxSxK.shape[2]
  # A question's J·T queries are one matmul against its prompt: [Q, H, M = J·T, K].
  q_QxHxMxK = q_BxTxHxK.reshape(nq, j * t, h, k).transpose(0, 2, 1, 3)
  prompt_QxHxMxP = jnp.einsum("qhmk,qhpk->qhmp", q_QxHxMxK, prompt_k_QxHxPxK,
                              preferred_element_type=jnp.float32)
  prompt_BxHxTxP = prompt_QxHxMxP.reshape(nq, h, j, t, p).transpose(0, 2, 1, 3, 4).reshape(
      b, h, t, p)
  gen_BxHxTxS = jnp.einsum("bthk,bhsk->bhts", q_BxTxHxK, k_BxHxSxK,
                           preferred_element_type=jnp.float32)
  logits_BxHxTxR = jnp.concatenate([prompt_BxHxTxP, gen_BxHxTxS], axis=-1) * k ** -0.5
  prompt_mask_BxTxP = jnp.broadcast_to(jnp.repeat(prompt_mask_QxP, j, axis=0)[:, None], (b, t, p))
  gen_mask_TxS = (length + jnp.arange(t))[:, None] >= jnp.arange(s)[None, :]
  mask_BxTxR = jnp.concatenate([prompt_mask_BxTxP, jnp.broadcast_to(gen_mask_TxS, (b, t, s))],
                               axis=-1)
  logits_BxHxTxR = jnp.where(mask_BxTxR[:, None], logits_BxHxTxR, jnp.finfo(jnp.float32).min)
  probs_BxHxTxR = jax.nn.softmax(logits_BxHxTxR, axis=-1).astype(q_BxTxHxK.dtype)
  probs_QxHxMxP = probs_BxHxTxR[..., :p].reshape(nq, j, h, t, p).transpose(0, 2, 1, 3, 4).reshape(
      nq, h, j * t, p)
  out_QxHxMxK = jnp.einsum("qhmp,qhpk->qhmk", probs_QxHxMxP, prompt_v_QxHxPxK)
  out_BxTxHxK = jnp.einsum("bhts,bhsk->bthk", probs_BxHxTxR[..., p:], v_BxHxSxK)
  return out_QxHxMxK.transpose(0, 2, 1, 3).reshape(b, t, h, k) + out_BxTxHxK


class Attention(nn.Module):
  """Causal self-attention, three ways; returns (output, K/V [rows, H, slots, K] or None).

  Training (no `kv_mask_BxT`, no `cache`): over x alone; no K/V returned.
  Prefill (`kv_mask_BxT`, False at left padding): over x alone, padding keys masked; returns x's
  K/V, the prompt cache.
  Decode (`prompt` = (k, v, mask_QxP) of Q questions, `cache` = this layer's generated (k, v) of
  B = Q·J rows): x's T tokens go to generated slots `length`… and attend to their question's
  prompt and their own earlier slots; returns the updated generated (k, v).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, kv_mask_BxT=None, prompt=None, cache=None,
               length=None):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    h, k = cfg.n_heads, cfg.head_dim
    proj = lambda name: nn.DenseGeneral(  # noqa: E731
        (h, k), use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=name,
        kernel_init=_dense_init(cfg.d_model, ("embed", "heads", "kv")))
    q_BxTxHxK = rope(proj("query")(x_BxTxD), positions_BxT, cfg.rope_theta)
    k_BxTxHxK = rope(proj("key")(x_BxTxD), positions_BxT, cfg.rope_theta)
    v_BxTxHxK = proj("value")(x_BxTxD)

    if cache is not None:
      write = lambda c_BxHxSxK, new_BxTxHxK: jax.lax.dynamic_update_slice_in_dim(  # noqa: E731
          c_BxHxSxK, new_BxTxHxK.transpose(0, 2, 1, 3).astype(c_BxHxSxK.dtype), length, axis=2)
      kv = (write(cache[0], k_BxTxHxK), write(cache[1], v_BxTxHxK))
      out_BxTxHxK = _cached_attention(q_BxTxHxK, *prompt, *kv, length)
    elif kv_mask_BxT is not None:
      t = x_BxTxD.shape[1]
      causal_TxT = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
      out_BxTxHxK = _masked_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK,
                                      causal_TxT[None] & kv_mask_BxT[:, None, :])
      kv = (k_BxTxHxK.transpose(0, 2, 1, 3), v_BxTxHxK.transpose(0, 2, 1, 3))
    else:
      out_BxTxHxK = jax.nn.dot_product_attention(
          q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True, implementation=cfg.attention_impl)
      kv = None

    out_BxTxD = nn.DenseGeneral(
        cfg.d_model, axis=(-2, -1), use_bias=False, dtype=dtype, param_dtype=jnp.float32,
        name="out", kernel_init=_dense_init(h * k, ("heads", "kv", "embed")))(out_BxTxHxK)
    return out_BxTxD, kv


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    dense = lambda feats, names, fan_in, name: nn.Dense(  # noqa: E731
        feats, use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=name,
        kernel_init=_dense_init(fan_in, names))
    gate_BxTxF = dense(cfg.d_ff, ("embed", "mlp"), cfg.d_model, "gate")(x_BxTxD)
    up_BxTxF = dense(cfg.d_ff, ("embed", "mlp"), cfg.d_model, "up")(x_BxTxD)
    return dense(cfg.d_model, ("mlp", "embed"), cfg.d_ff, "down")(nn.silu(gate_BxTxF) * up_BxTxF)


class Block(nn.Module):
  """Pre-norm attention + SwiGLU; arguments after `positions_BxT` as for `Attention`."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, kv_mask_BxT=None, prompt=None, cache=None,
               length=None):
    attn_BxTxD, kv = Attention(self.cfg, name="attn")(
        RMSNorm(name="attn_norm")(x_BxTxD), positions_BxT, kv_mask_BxT, prompt, cache, length)
    x_BxTxD = x_BxTxD + attn_BxTxD
    x_BxTxD = x_BxTxD + MLP(self.cfg, name="mlp")(RMSNorm(name="mlp_norm")(x_BxTxD))
    return x_BxTxD, kv


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer (tuples of n_layers arrays [rows, H, slots, K])."""
  k: tuple
  v: tuple


class Transformer(nn.Module):
  """`__call__` is the training/scoring forward; `prefill` and `decode` sample with KV caches."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
        (cfg.vocab_size, cfg.d_model), jnp.float32)
    block = nn.remat(Block, static_argnums=()) if cfg.remat else Block
    self.blocks = [block(cfg, name=f"block_{i}") for i in range(cfg.n_layers)]
    self.final_norm = RMSNorm()
    if not cfg.tie_embeddings:
      self.unembed = self.param(
          "unembed", _dense_init(cfg.d_model, ("embed", "vocab")), (cfg.d_model, cfg.vocab_size),
          jnp.float32)

  def _logits(self, x_BxTxD):
    x_BxTxD = self.final_norm(x_BxTxD)
    dtype = jnp.dtype(self.cfg.dtype)
    if self.cfg.tie_embeddings:
      return jnp.einsum("btd,vd->btv", x_BxTxD, self.embedding.astype(dtype),
                        preferred_element_type=jnp.float32)
    return jnp.einsum("btd,dv->btv", x_BxTxD, self.unembed.astype(dtype),
                      preferred_element_type=jnp.float32)

  def _embed(self, tokens_BxT):
    return jnp.take(self.embedding, tokens_BxT, axis=0).astype(jnp.dtype(self.cfg.dtype))

  def __call__(self, tokens_BxT: jax.Array, positions_BxT: Optional[jax.Array] = None) -> jax.Array:
    """Causal forward over whole sequences; returns fp32 logits [B, T, V]."""
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
    x_BxTxD = self._embed(tokens_BxT)
    for block in self.blocks:
      x_BxTxD, _ = block(x_BxTxD, positions_BxT)
    return self._logits(x_BxTxD)

  def prefill(self, tokens_QxP, positions_QxP, kv_mask_QxP) -> tuple[jax.Array, KVCache]:
    """Causal forward over left-padded prompts (`kv_mask_QxP` False at padding, `positions_QxP`
    their true positions); returns (logits [Q, P, V], the prompts' KV cache)."""
    x_QxPxD = self._embed(tokens_QxP)
    kvs = []
    for block in self.blocks:
      x_QxPxD, kv = block(x_QxPxD, positions_QxP, kv_mask_QxP)
      kvs.append(kv)
    return self._logits(x_QxPxD), KVCache(*(tuple(c) for c in zip(*kvs)))

  def decode(self, tokens_BxT, positions_BxT, prompt: KVCache, prompt_mask_QxP, cache: KVCache,
             length) -> tuple[jax.Array, KVCache]:
    """T tokens for each of B = Q·J rows (rows q·J… sample question q); returns (logits [B, T, V],
    `cache` with their K/V in slots `length`…).

    Rows attend to their question's `prompt` cache (from `prefill`, shared, not copied) where
    `prompt_mask_QxP`, and to their own generated slots up to their own.
    """
    x_BxTxD = self._embed(tokens_BxT)
    ks, vs = [], []
    for block, pk, pv, k, v in zip(self.blocks, prompt.k, prompt.v, cache.k, cache.v):
      x_BxTxD, (k, v) = block(x_BxTxD, positions_BxT, None, (pk, pv, prompt_mask_QxP), (k, v),
                              length)
      ks.append(k)
      vs.append(v)
    return self._logits(x_BxTxD), KVCache(tuple(ks), tuple(vs))


def init_cache(cfg: ModelConfig, rows: int, slots: int) -> KVCache:
  """Zero generated-token cache for `decode`: `slots` per row, in `cfg.dtype` like the prompt's."""
  zeros = lambda: tuple(jnp.zeros((rows, cfg.n_heads, slots, cfg.head_dim), cfg.dtype)  # noqa: E731
                        for _ in range(cfg.n_layers))
  return KVCache(zeros(), zeros())


def abstract_params(cfg: ModelConfig):
  """Boxed (logically partitioned) parameter shapes, without allocating anything."""
  return jax.eval_shape(lambda key: _init_boxed(cfg, key), jax.random.key(0))


def logical_specs(cfg: ModelConfig):
  """PartitionSpec of logical axis names for every parameter."""
  return nn.get_partition_spec(abstract_params(cfg))


def _init_boxed(cfg: ModelConfig, key: jax.Array):
  tokens_1xT = jnp.zeros((1, min(8, cfg.max_seq_len)), jnp.int32)
  return Transformer(cfg).init(key, tokens_1xT)["params"]


def init_params(cfg: ModelConfig, key: jax.Array):
  """Unboxed fp32 parameters; jit it (with out_shardings to shard them at creation)."""
  return nn.unbox(_init_boxed(cfg, key))
