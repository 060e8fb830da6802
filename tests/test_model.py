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
  assert counts["body"] == counts["non_embedding"] == body
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


def test_prefill_and_cached_decode_match_full_forward():
  """Two left-padded prompts, each continued by two rows sharing its prompt cache; the decode
  feeds two tokens in its first call, then one at a time."""
  params = _init(TINY)
  model = Transformer(TINY)
  prefill = jax.jit(lambda *a: model.apply({"params": params}, *a, method="prefill"))
  decode = jax.jit(lambda *a: model.apply({"params": params}, *a, method="decode"))
  full = jax.jit(model.apply)
  keys = jax.random.split(jax.random.key(2), 3)
  prompts = [jax.random.randint(keys[0], (7,), 0, TINY.vocab_size),
             jax.random.randint(keys[1], (4,), 0, TINY.vocab_size)]
  gen_QJxG = jax.random.randint(keys[2], (4, 5), 0, TINY.vocab_size)  # row q·2 + j continues q
  p = 7
  tokens_QxP = jnp.stack([jnp.pad(x, (p - len(x), 0)) for x in prompts])
  pad_Qx1 = jnp.array([[p - len(x)] for x in prompts])
  positions_QxP = jnp.maximum(jnp.arange(p)[None] - pad_Qx1, 0)
  kv_mask_QxP = jnp.arange(p)[None] >= pad_Qx1
  logits_QxPxV, prompt = prefill(tokens_QxP, positions_QxP, kv_mask_QxP)
  for q, x in enumerate(prompts):
    np.testing.assert_allclose(logits_QxPxV[q, p - len(x):], full({"params": params}, x[None])[0],
                               atol=2e-5)
  cache = init_cache(TINY, 4, 5)
  lens_B = jnp.repeat(jnp.array([len(x) for x in prompts]), 2)
  steps, length = [], 0
  for t in (2, 1, 1, 1):
    logits_BxTxV, cache = decode(gen_QJxG[:, length:length + t], lens_B[:, None] + length
                                 + jnp.arange(t), prompt, kv_mask_QxP, cache, length)
    steps.append(logits_BxTxV)
    length += t
  got_BxGxV = jnp.concatenate(steps, axis=1)
  for b in range(4):
    seq = jnp.concatenate([prompts[b // 2], gen_QJxG[b]])[None]
    np.testing.assert_allclose(got_BxGxV[b], full({"params": params}, seq)[0, -5:], atol=2e-5)


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
