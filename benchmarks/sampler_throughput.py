"""Sampler throughput: generated tokens/s for one question with k samples, three ways.

  shared      t2jax.sampler: the prompt prefilled once, its KV cache shared by the k samples
  no_sharing  the same sampler with the prompt re-encoded for every sample (k one-sample questions)
  hf          Hugging Face `transformers` generate(num_return_sequences=k, do_sample=True) with an
              equal-size PyTorch Llama (random weights)

A ~10M-parameter model (d_model 384, 6 layers, 6 heads, d_ff 1024, vocabulary 2048), a 128-token
prompt, 32 new tokens, no early stop (EOS ignored, no stop strings), temperature 1, no top-k/top-p.
Each figure is the best of `--repeats` timed runs after a warm-up run (which compiles). For each k
the three run one after another, never at the same time, with the same number of threads
(`--threads`, default every core): XLA's intra-op pool (XLA_FLAGS, set before the backend starts)
and torch.set_num_threads. The 1-minute load average before each k is recorded: on a shared,
loaded machine a multi-threaded torch loses most of its speed waiting at OpenMP barriers for
descheduled threads, so compare the frameworks there with `--threads 1`.

torch and transformers are not t2jax dependencies; install them for this benchmark only:
  pip install torch==2.13.0 transformers   # torch: a CPU wheel (a local one, or PyTorch's CPU
                                           # index); PyPI's default build is CUDA, several GB
Run:  python benchmarks/sampler_throughput.py [--threads 1] [--out PATH]
      (writes benchmarks/results/sampler_throughput.{json,md} by default)
"""

import argparse
import os
import platform
import time

import jax
import numpy as np

from t2jax import io
from t2jax.model import ModelConfig, count_params, init_params
from t2jax.sampler import Sampler

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODEL = ModelConfig(vocab_size=2048, d_model=384, n_layers=6, n_heads=6, d_ff=1024,
                    max_seq_len=256)
PROMPT_LEN, NEW_TOKENS = 128, 32


class _NoTextTokenizer:
  """Token ids only: the benchmark feeds ids and never decodes (stop strings are off)."""
  eos_id = 0
  vocab_size = MODEL.vocab_size

  def decode(self, ids):
    return ""


def _best_time(fn, repeats: int) -> float:
  fn()  # warm-up: compiles
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def jax_runners(prompt_ids) -> dict:
  """name -> fn(k) drawing k samples of the prompt with the t2jax sampler, two ways."""
  params = jax.jit(init_params, static_argnums=0)(MODEL, jax.random.key(0))
  sampler = Sampler(MODEL, params, _NoTextTokenizer())
  kw = {"key": jax.random.key(1), "max_new_tokens": NEW_TOKENS, "stop_on_eos": False}

  def shared(k):
    got = sampler.sample_tokens([prompt_ids], k, **kw)
    assert got.lengths_QxK.min() == NEW_TOKENS

  def no_sharing(k):
    got = sampler.sample_tokens([prompt_ids] * k, 1, q_batch=k, **kw)
    assert got.lengths_QxK.min() == NEW_TOKENS

  return {"shared": shared, "no_sharing": no_sharing}


def hf_runner(prompt_ids, threads: int):
  """(fn(k) running HF generate for k samples, version/setup info)."""
  import torch
  import transformers

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  config = transformers.LlamaConfig(
      vocab_size=MODEL.vocab_size, hidden_size=MODEL.d_model, intermediate_size=MODEL.d_ff,
      num_hidden_layers=MODEL.n_layers, num_attention_heads=MODEL.n_heads,
      num_key_value_heads=MODEL.n_heads, max_position_embeddings=MODEL.max_seq_len,
      tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0)
  model = transformers.LlamaForCausalLM(config).eval()
  input_ids = torch.tensor([prompt_ids])

  def generate(k):
    with torch.inference_mode():
      got = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                           num_return_sequences=k, max_new_tokens=NEW_TOKENS,
                           min_new_tokens=NEW_TOKENS, temperature=1.0, top_k=0, top_p=1.0)
    assert got.shape == (k, PROMPT_LEN + NEW_TOKENS)

  info = {"torch": torch.__version__, "transformers": transformers.__version__,
          "torch_threads": torch.get_num_threads(),
          "hf_total_params": sum(p.numel() for p in model.parameters()),
          "hf_attention": model.config._attn_implementation}
  return generate, info


def _cpu_name() -> str:
  with open("/proc/cpuinfo") as f:
    names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
  return names[0] if names else platform.processor()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ks", default="1,4,16,64,256")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="intra-op threads for both JAX and torch")
  parser.add_argument("--out", default=os.path.join(RESULTS, "sampler_throughput"))
  args = parser.parse_args()
  ks = [int(k) for k in args.ks.split(",")]
  prompt_ids = [int(t) for t in np.random.default_rng(0).integers(1, MODEL.vocab_size, PROMPT_LEN)]
  if args.threads < 1:
    raise ValueError(f"--threads={args.threads}: must be >= 1")
  os.environ["XLA_FLAGS"] = " ".join([
      os.environ.get("XLA_FLAGS", ""), f"--xla_cpu_multi_thread_eigen={args.threads > 1}".lower(),
      f"intra_op_parallelism_threads={args.threads}"]).strip()
  load_before = os.getloadavg()
  runners = jax_runners(prompt_ids)
  runners["hf"], hf_info = hf_runner(prompt_ids, args.threads)
  rows = []
  for k in ks:  # the three ways back to back per k, so a change in machine load hits all alike
    row = {"k": k, "load_average_1min": os.getloadavg()[0]}
    for name, fn in runners.items():
      seconds = _best_time(lambda: fn(k), args.repeats)
      row[name] = k * NEW_TOKENS / seconds
      print(f"{name:10s} k={k:4d}: {seconds:7.3f} s, {row[name]:9.1f} tokens/s", flush=True)
    row["speedup_vs_hf"] = row["shared"] / row["hf"]
    row["speedup_vs_no_sharing"] = row["shared"] / row["no_sharing"]
    rows.append(row)
  load_after = os.getloadavg()
  machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
             "python": platform.python_version(), "jax": jax.__version__,
             "jax_backend": jax.default_backend(), "threads": args.threads,
             "xla_flags": os.environ["XLA_FLAGS"], "load_average_before": load_before,
             "load_average_after": load_after, **hf_info}
  setup = {"model": {"d_model": MODEL.d_model, "n_layers": MODEL.n_layers,
                     "n_heads": MODEL.n_heads, "d_ff": MODEL.d_ff, "vocab": MODEL.vocab_size,
                     "N": count_params(MODEL)["N"], "dtype": MODEL.dtype},
           "prompt_tokens": PROMPT_LEN, "new_tokens": NEW_TOKENS, "repeats": args.repeats,
           "metric": "generated tokens/s (k·new_tokens / best wall time of one question)"}
  io.write_json(args.out + ".json", {"machine": machine, "setup": setup, "rows": rows})
  lines = [
      "# Sampler throughput (generated tokens/s, one question, k samples)", "",
      f"Machine: {machine['cpu']}, {machine['cores']} cores, jax {jax.__version__} "
      f"({machine['jax_backend']}), torch {hf_info['torch']}, transformers "
      f"{hf_info['transformers']} ({hf_info['hf_attention']} attention); {args.threads} "
      f"thread(s) each for XLA and torch; 1-minute load average {load_before[0]:.1f} before, "
      f"{load_after[0]:.1f} after (other jobs share the machine).",
      f"Model: d_model {MODEL.d_model}, {MODEL.n_layers} layers, vocab {MODEL.vocab_size}, "
      f"N = {setup['model']['N']:,} ({MODEL.dtype}); prompt {PROMPT_LEN} tokens, {NEW_TOKENS} new "
      f"tokens, no early stop; best of {args.repeats} after a warm-up.", "",
      "| k | t2jax shared prompt | t2jax no sharing | HF generate | shared / HF | "
      "shared / no sharing | load (1 min) |",
      "|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    lines.append(f"| {r['k']} | {r['shared']:,.0f} | {r['no_sharing']:,.0f} | {r['hf']:,.0f} | "
                 f"{r['speedup_vs_hf']:.2f}x | {r['speedup_vs_no_sharing']:.2f}x | "
                 f"{r['load_average_1min']:.1f} |")
  io.write_text(args.out + ".md", "\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
