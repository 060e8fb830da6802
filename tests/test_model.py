import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2jax import sizes
from t2jax.model import ModelConfig, Transformer, count_params, init_cache, init_params, logical_specs

TINY = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_seq_len=32)


def _init(cfg):
  return jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))


@pytest.mark.parametrize("tie", [True, False])
def test_param_count_matches_closed_form(tie):
  cfg = dataclasses.replace(TINY, tie_embeddings=tie)
  params = _init(cfg)
  actual = sum(x.size for x in jax.tree.leaves(params))
  counts = count_params(cfg)
  assert actual == counts["total"]
  d, v, f, hk = cfg.d_model, cfg.vocab_size, cfg.d_ff, cfg.n_heads * cfg.head_dim
  body = cfg.n_layers * (2 * d + 4 * d * hk + 3 * d * f) + d
  assert counts["body"] == body
  assert counts["N"] == body + v * d
  assert counts["total"] == body + v * d * (1 if tie else 2)


def test_every_parameter_has_logical_axes():
  specs = jax.tree.leaves(logical_specs(TINY), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  params = jax.tree.leaves(_init(TINY))
  assert len(specs) == len(params)
  for spec, p in zip(specs, params):
    assert len(spec) == p.ndim and all(name is not None for name in spec)


def test_named_sizes_match_their_labels():
  for name in sizes.SIZES:
    vocab = sizes.CPU_VOCAB if name.startswith("cpu") else sizes.PAPER_VOCAB
    n = count_params(sizes.model_config(name, vocab_size=vocab, max_seq_len=128))["N"]
    label = name.split("-")[1]
    target = float(label[:-1]) * (1e3 if label.endswith("k") else 1e6)
    assert abs(n - target) / target < 0.15, (name, n)


def test_causal_forward_ignores_future_tokens():
  params = _init(TINY)
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, TINY.vocab_size)
  changed = tokens.at[:, 10:].set((tokens[:, 10:] + 1) % TINY.vocab_size)
  apply = jax.jit(Transformer(TINY).apply)
  a = apply({"params": params}, tokens)
  b = apply({"params": params}, changed)
  np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
  assert not np.allclose(a[:, 10:], b[:, 10:])


def test_cached_decode_matches_full_forward_with_left_padding():
  params = _init(TINY)
  model = Transformer(TINY)
  decode = jax.jit(lambda *a: model.apply({"params": params}, *a, method="decode"))
  tokens = jax.random.randint(jax.random.key(2), (1, 12), 0, TINY.vocab_size)
  full = jax.jit(model.apply)({"params": params}, tokens)
  pad = 3  # the same sequence, left-padded, prefilled in one call then decoded token by token
  padded = jnp.concatenate([jnp.zeros((1, pad), jnp.int32), tokens], axis=1)
  positions = jnp.maximum(jnp.arange(padded.shape[1]) - pad, 0)[None]
  kv_mask = (jnp.arange(padded.shape[1]) >= pad)[None]
  cache = init_cache(TINY, 1, padded.shape[1])
  prefix = pad + 7
  logits, cache = decode(padded[:, :prefix], positions[:, :prefix], cache, 0, kv_mask)
  steps = [logits[:, pad:]]
  for i in range(prefix, padded.shape[1]):
    logits, cache = decode(padded[:, i:i + 1], positions[:, i:i + 1], cache, i, kv_mask)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5)


@pytest.mark.parametrize("field,value,match", [
    ("n_heads", 5, "does not divide"),
    ("d_model", -8, "d_model"),
    ("dtype", "float16", "dtype"),
])
def test_bad_model_config_names_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    dataclasses.replace(TINY, **{field: value}).validate()


def test_unknown_size_lists_choices():
  with pytest.raises(ValueError, match="cpu-1m"):
    sizes.model_config("cpu-7z", vocab_size=256, max_seq_len=32)


def test_bf16_compute_keeps_fp32_params_and_logits():
  cfg = dataclasses.replace(TINY, dtype="bfloat16")
  params = _init(cfg)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = jax.jit(Transformer(cfg).apply)({"params": params}, jnp.zeros((1, 8), jnp.int32))
  assert logits.dtype == jnp.float32
  ref = jax.jit(Transformer(TINY).apply)({"params": params}, jnp.zeros((1, 8), jnp.int32))
  np.testing.assert_allclose(logits, ref, atol=0.05)
