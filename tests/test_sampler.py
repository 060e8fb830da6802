import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2jax import sharding
from t2jax.model import ModelConfig, Transformer, init_params
from t2jax.sampler import (Sampler, bucket_length, build_stop_table, filter_top_p, sample_next,
                           truncate_at_stop)
from t2jax.tokenizer import train_bpe

TEXTS = ["Q: 3+4-1=? A: 6\nThe quick brown fox jumps over the lazy dog.\n\nQuestion: where is "
         "the cat? Answer: on the mat.", "A man, a plan, a canal: Panama! 0123456789"] * 20
PROMPTS = ["Q: 3+4=? A:", "The quick brown fox jumps over the lazy dog. Where is the cat?"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return train_bpe(TEXTS, 300, str(tmp_path_factory.mktemp("tok") / "tok.json"))


@pytest.fixture(scope="module")
def model(tokenizer):
  cfg = ModelConfig(vocab_size=tokenizer.padded_vocab_size, d_model=32, n_layers=2, n_heads=4,
                    d_ff=64, max_seq_len=64)
  return cfg, jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(0))


@pytest.fixture(scope="module")
def sampler(model, tokenizer):
  return Sampler(*model, tokenizer)


def _greedy(sampler, prompts, **kw):
  kw = {"max_new_tokens": 8, "stop_strings": (), "stop_on_eos": False, **kw}
  return sampler.sample_tokens(sampler.encode(prompts), 2, key=jax.random.key(0),
                               temperature=0.0, **kw)


def test_bucket_length_and_truncation():
  assert [bucket_length(n) for n in (1, 16, 17, 100, 128, 129, 300)] == [16, 16, 32, 128, 128,
                                                                          256, 384]
  assert truncate_at_stop("a\nb Question: c", ("Question:", "\n")) == "a"
  assert truncate_at_stop("no stop", ("\n",)) == "no stop"


def test_stop_table_catches_stop_strings_across_tokens():
  texts = ["a", "\n", "b\n", "Que", "st", "ion:", "x"]
  table = build_stop_table(texts, ("\n\n", "Question:"))

  def stops_at(ids):
    state = 0
    for i, t in enumerate(ids):
      if table.match_SxV[state, t]:
        return i
      state = table.next_SxV[state, t]
    return None

  assert stops_at([0, 1, 0, 1]) is None
  assert stops_at([0, 1, 1]) == 2          # "\n" + "\n"
  assert stops_at([2, 1]) == 1             # "b\n" + "\n"
  assert stops_at([3, 4, 5]) == 2          # "Que" + "st" + "ion:"
  assert stops_at([3, 4, 6, 5]) is None    # interrupted
  assert stops_at([3, 3, 4, 5]) == 3       # a failed partial match does not hide the next one
  empty = build_stop_table(texts, ())
  assert not empty.match_SxV.any() and not empty.next_SxV.any()


def test_top_p_keeps_the_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
  kept = np.isfinite(np.asarray(filter_top_p(logits, 0.75)))
  np.testing.assert_array_equal(kept, [[1, 1, 0, 0], [0, 0, 1, 1]])
  kept = np.isfinite(np.asarray(filter_top_p(logits, 0.85)))
  np.testing.assert_array_equal(kept, [[1, 1, 1, 0], [0, 1, 1, 1]])
  assert np.isfinite(np.asarray(filter_top_p(logits, 1e-3))).sum() == 2  # never empty


def test_sampling_frequencies_follow_temperature_and_top_p():
  n = 20000
  logits_NxV = jnp.broadcast_to(jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05])), (n, 4))
  keys = jax.random.split(jax.random.key(0), n)
  draws = jax.jit(lambda l, k: [sample_next(l, k, t, p) for t, p in ((0.5, 1.0), (1.0, 0.75),
                                                                     (0.0, 1.0))])
  hot, nucleus, greedy = (np.asarray(d) for d in draws(logits_NxV, keys))
  want = np.asarray(jax.nn.softmax(logits_NxV[0] / 0.5))
  np.testing.assert_allclose(np.bincount(hot, minlength=4) / n, want, atol=0.015)
  np.testing.assert_allclose(np.bincount(nucleus, minlength=4) / n, [0.625, 0.375, 0, 0],
                             atol=0.015)
  assert np.all(greedy == 0)


@functools.lru_cache(maxsize=None)
def _forward(cfg):
  return jax.jit(lambda params, tokens: Transformer(cfg).apply({"params": params}, tokens))


def _pad(ids, length=64):
  return jnp.asarray([list(ids) + [0] * (length - len(ids))])  # right padding: causal, harmless


def test_cached_greedy_equals_full_forward_decoding(sampler, model):
  cfg, params = model
  out = _greedy(sampler, PROMPTS)
  n_real = sampler.n_real_vocab
  for q, ids in enumerate(sampler.encode(PROMPTS)):
    seq = list(ids)
    for _ in range(8):  # no cache: the whole sequence again each step
      logits = _forward(cfg)(params, _pad(seq))[0, len(seq) - 1, :n_real]
      seq.append(int(jnp.argmax(logits)))
    np.testing.assert_array_equal(out.tokens_QxKxT[q, 0], seq[len(ids):])
    np.testing.assert_array_equal(out.tokens_QxKxT[q, 1], seq[len(ids):])
  np.testing.assert_array_equal(out.lengths_QxK, 8)
  assert not out.stopped_QxK.any()


def test_greedy_is_deterministic_and_unchanged_by_left_padding(sampler):
  batched = _greedy(sampler, PROMPTS)  # the short prompt is left-padded to the long one's bucket
  alone = _greedy(sampler, PROMPTS[:1])
  np.testing.assert_array_equal(batched.tokens_QxKxT[:1], alone.tokens_QxKxT)
  again = sampler.sample_tokens(sampler.encode(PROMPTS[:1]), 2, key=jax.random.key(7),
                                max_new_tokens=8, temperature=0.0, stop_on_eos=False)
  np.testing.assert_array_equal(again.tokens_QxKxT, alone.tokens_QxKxT)


def test_samples_differ_reproduce_and_ignore_chunking(sampler):
  ids = sampler.encode(PROMPTS)
  kw = {"key": jax.random.key(3), "max_new_tokens": 8, "stop_on_eos": False}
  base = sampler.sample_tokens(ids, 6, **kw)
  tokens = base.tokens_QxKxT
  assert len({tuple(row) for row in tokens[0]}) == 6  # per-sample RNG: all 6 samples differ
  assert not np.array_equal(tokens[0], tokens[1])
  np.testing.assert_array_equal(sampler.sample_tokens(ids, 6, **kw).tokens_QxKxT, tokens)
  chunked = sampler.sample_tokens(ids, 6, k_chunk=4, q_batch=1, **kw)  # 2 chunks of 3, 1 prompt
  np.testing.assert_array_equal(chunked.tokens_QxKxT, tokens)
  fewer = sampler.sample_tokens(ids, 3, q_batch=1, **kw)  # sample j does not depend on k
  np.testing.assert_array_equal(fewer.tokens_QxKxT, tokens[:, :3])
  other_key = sampler.sample_tokens(ids, 6, **{**kw, "key": jax.random.key(4)})
  assert not np.array_equal(other_key.tokens_QxKxT, tokens)


def test_stop_strings_end_sequences_and_cut_text(sampler):
  out = _greedy(sampler, PROMPTS[:1], max_new_tokens=10)
  ids = [int(t) for t in out.tokens_QxKxT[0, 0]]
  texts = [sampler.tokenizer.decode([t]) for t in ids]
  # A clean ASCII token not seen earlier in the completion: its text stops generation there.
  step = next(i for i in range(2, 10) if texts[i].isascii() and texts[i].strip()
              and texts[i] not in "".join(texts[:i]) and texts[i] not in sampler.tokenizer.decode(
                  sampler.encode(PROMPTS[:1])[0]))
  stop = texts[step]
  stopped = _greedy(sampler, PROMPTS[:1], max_new_tokens=10, stop_strings=(stop,))
  np.testing.assert_array_equal(stopped.lengths_QxK, step + 1)
  assert stopped.stopped_QxK.all()
  np.testing.assert_array_equal(stopped.tokens_QxKxT[0, 0, :step + 1], ids[:step + 1])
  text = sampler.generate(PROMPTS[:1], 1, key=jax.random.key(0), max_new_tokens=10,
                          temperature=0.0, stop_strings=(stop,))[0][0]
  assert text == sampler.tokenizer.decode(ids[:step + 1]).split(stop)[0]


def test_eos_ends_sequences(model, tokenizer, sampler):
  ids = sampler.encode(PROMPTS[:1])
  greedy = [int(t) for t in _greedy(sampler, PROMPTS[:1]).tokens_QxKxT[0, 0]]
  eos = greedy[3]

  @dataclasses.dataclass(frozen=True)
  class EosAt:  # the same tokenizer with another token playing EOS
    inner: object
    eos_id: int
    vocab_size: int = tokenizer.vocab_size

    def encode_batch(self, texts):
      return self.inner.encode_batch(texts)

    def decode(self, ids):
      return self.inner.decode(ids)

  other = Sampler(*model, EosAt(tokenizer, eos))
  out = other.sample_tokens(ids, 2, key=jax.random.key(0), max_new_tokens=8, temperature=0.0)
  first = greedy.index(eos)
  np.testing.assert_array_equal(out.lengths_QxK, first + 1)
  assert out.stopped_QxK.all()
  np.testing.assert_array_equal(out.tokens_QxKxT[0, 0, :first + 1], greedy[:first + 1])
  assert other.decode_completion(out.tokens_QxKxT[0, 0], ()) == tokenizer.decode(greedy[:first])


def test_sharded_mesh_equals_unsharded(model, tokenizer, sampler):
  mesh = sharding.make_mesh((2, 2, 2))  # batch over data×fsdp, heads/MLP/vocab over tensor
  sharded = Sampler(*model, tokenizer, mesh=mesh)
  ids = sampler.encode(PROMPTS)
  kw = {"key": jax.random.key(5), "max_new_tokens": 8, "stop_strings": ("\n",)}
  want = sampler.sample_tokens(ids, 6, **kw)
  got = sharded.sample_tokens(ids, 6, **kw)
  np.testing.assert_array_equal(got.tokens_QxKxT, want.tokens_QxKxT)
  np.testing.assert_array_equal(got.lengths_QxK, want.lengths_QxK)
  answers = [" 7", " on the mat."]
  np.testing.assert_allclose(sharded.score(PROMPTS, answers)[0], sampler.score(PROMPTS, answers)[0],
                             rtol=1e-5)


def test_score_matches_direct_log_probs(sampler, model, tokenizer):
  cfg, params = model
  answers = [" 7", " on the mat."]
  nll, counts = sampler.score(PROMPTS, answers, batch_size=2)
  for q, (prompt, answer) in enumerate(zip(PROMPTS, answers)):
    p_ids, a_ids = sampler.encode([prompt])[0], tokenizer.encode(answer)
    logits = _forward(cfg)(params, _pad(p_ids + a_ids))[0, :, :tokenizer.vocab_size]
    logp = jax.nn.log_softmax(logits, axis=-1)
    want = -sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(a_ids))
    assert counts[q] == len(a_ids)
    np.testing.assert_allclose(nll[q], want, rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"top_p": 0.0}, "top_p"),
    ({"temperature": -1.0}, "temperature"),
    ({"k_chunk": 0}, "k_chunk"),
    ({"max_new_tokens": 60}, "max_seq_len"),
])
def test_bad_arguments_name_the_field(sampler, kwargs, match):
  kw = {"key": jax.random.key(0), "max_new_tokens": 4, **kwargs}
  with pytest.raises(ValueError, match=match):
    sampler.sample_tokens(sampler.encode(PROMPTS), 2, **kw)
