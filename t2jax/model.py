"""Decoder-only transformer (Flax Linen): RMSNorm, RoPE, SwiGLU, causal attention.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv`, `mlp`); `sharding.py`
maps them onto the mesh. Parameters are fp32; activations use `cfg.dtype` (bf16 on accelerators,
fp32 on CPU); softmax and logits are fp32. The KV cache is passed functionally so the sampler can
run the decode loop inside `lax.while_loop`.
"""

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Cache = list  # one {"k": [B, S, H, K], "v": [B, S, H, K]} dict per layer


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

  `body` is Kaplan's non-embedding count (blocks + final norm). `N`, the count the laws use, adds the
  output head (V·D matrix work per token, tied or not), so 6·N·D is the training matmul cost.
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
  """Attention with an explicit boolean mask; fp32 softmax. Used on the cached (decode) path."""
  scale = q_BxTxHxK.shape[-1] ** -0.5
  logits_BxHxTxS = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK,
                              preferred_element_type=jnp.float32) * scale
  logits_BxHxTxS = jnp.where(mask_BxTxS[:, None], logits_BxHxTxS, jnp.finfo(jnp.float32).min)
  probs_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1).astype(v_BxSxHxK.dtype)
  return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, cache=None, cache_index=None, kv_mask_BxS=None):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    h, k = cfg.n_heads, cfg.head_dim
    proj = lambda name: nn.DenseGeneral(  # noqa: E731
        (h, k), use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=name,
        kernel_init=_dense_init(cfg.d_model, ("embed", "heads", "kv")))
    q_BxTxHxK = rope(proj("query")(x_BxTxD), positions_BxT, cfg.rope_theta)
    k_BxTxHxK = rope(proj("key")(x_BxTxD), positions_BxT, cfg.rope_theta)
    v_BxTxHxK = proj("value")(x_BxTxD)

    if cache is None:
      out_BxTxHxK = jax.nn.dot_product_attention(
          q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True, implementation=cfg.attention_impl)
      new_cache = None
    else:
      k_cache = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_BxTxHxK.astype(cache["k"].dtype),
                                                    cache_index, axis=1)
      v_cache = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_BxTxHxK.astype(cache["v"].dtype),
                                                    cache_index, axis=1)
      t, s = x_BxTxD.shape[1], k_cache.shape[1]
      causal_TxS = (cache_index + jnp.arange(t))[:, None] >= jnp.arange(s)[None, :]
      mask_BxTxS = causal_TxS[None] & kv_mask_BxS[:, None, :]
      out_BxTxHxK = _masked_attention(q_BxTxHxK, k_cache.astype(dtype), v_cache.astype(dtype),
                                      mask_BxTxS)
      new_cache = {"k": k_cache, "v": v_cache}

    out_BxTxD = nn.DenseGeneral(
        cfg.d_model, axis=(-2, -1), use_bias=False, dtype=dtype, param_dtype=jnp.float32,
        name="out", kernel_init=_dense_init(h * k, ("heads", "kv", "embed")))(out_BxTxHxK)
    return out_BxTxD, new_cache


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
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, cache=None, cache_index=None, kv_mask_BxS=None):
    attn_BxTxD, new_cache = Attention(self.cfg, name="attn")(
        RMSNorm(name="attn_norm")(x_BxTxD), positions_BxT, cache, cache_index, kv_mask_BxS)
    x_BxTxD = x_BxTxD + attn_BxTxD
    x_BxTxD = x_BxTxD + MLP(self.cfg, name="mlp")(RMSNorm(name="mlp_norm")(x_BxTxD))
    return x_BxTxD, new_cache


class Transformer(nn.Module):
  """`__call__` is the training/scoring forward; `decode` runs with a KV cache."""
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

  def decode(self, tokens_BxT, positions_BxT, cache: Cache, cache_index, kv_mask_BxS):
    """Writes T new tokens into the cache at slot `cache_index` and returns (logits, cache).

    Slot s of the cache is visible to the query at slot q when s <= q and `kv_mask_BxS[b, s]`
    (False for padding). RoPE uses `positions_BxT`, so left-padded prompts keep true positions.
    """
    x_BxTxD = self._embed(tokens_BxT)
    new_cache = []
    for block, layer_cache in zip(self.blocks, cache):
      x_BxTxD, layer_cache = block(x_BxTxD, positions_BxT, layer_cache, cache_index, kv_mask_BxS)
      new_cache.append(layer_cache)
    return self._logits(x_BxTxD), new_cache


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> Cache:
  """Zero KV cache for `batch` sequences of `length` slots."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  shape = (batch, length, cfg.n_heads, cfg.head_dim)
  return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(cfg.n_layers)]


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
