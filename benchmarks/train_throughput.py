"""Train-step throughput: tokens/s and achieved FLOP/s for three model sizes, against the machine's
own matmul FLOP/s measured in the same run.

Achieved FLOP/s = tokens/s × train FLOPs per token (`t2jax.flops.train_flops_per_token`: 6·N for
the matmuls plus the causal attention term). The reference is a jitted jnp.dot of the model's
largest matmul shape, (batch·seq, d_model) @ (d_model, d_ff), in the step's dtype; on an accelerator
the device's peak from `t2jax.flops.PEAK_FLOPS` is reported too (MFU).

  python benchmarks/train_throughput.py                      # CPU: ~1M, ~3M, ~10M at seq 128
  python benchmarks/train_throughput.py --preset=gpu         # ~50M, ~150M, ~400M at seq 2048, bf16

Writes benchmarks/results/train_throughput_<preset>.{json,md}.
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from t2jax import flops, io, sharding, train
from t2jax.model import ModelConfig, count_params

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# name: (d_model, n_layers, n_heads, d_ff)
PRESETS = {
    "cpu": dict(vocab=2048, seq=128, batch=32, dtype="float32", sizes={
        "1m": (128, 4, 4, 352), "3m": (192, 6, 6, 512), "10m": (320, 7, 5, 864)}),
    "gpu": dict(vocab=50432, seq=2048, batch=16, dtype="bfloat16", sizes={
        "50m": (512, 8, 8, 1376), "150m": (768, 14, 12, 2048), "400m": (1280, 18, 20, 3456)}),
}


def step_throughput(cfg: ModelConfig, batch: int, steps: int) -> float:
  """Tokens/s of the jitted, donated train step (one device), best of `steps` steps."""
  t = train.default_config()
  plan = train.RunPlan(cfg, count_params(cfg)["N"], steps=1000, tokens=0, warmup_steps=10)
  mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx, schedule = train.make_optimizer(t, plan)
  shardings = train.state_shardings(cfg, tx, mesh)
  state = train.create_state(cfg, tx, shardings, seed=0)
  step = train.make_train_step(cfg, tx, schedule, shardings, mesh)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size,
                                                         (batch, cfg.max_seq_len + 1)), jnp.int32)
  state, out = step(state, tokens)
  jax.block_until_ready(out)
  best = float("inf")
  for _ in range(steps):
    start = time.perf_counter()
    state, out = step(state, tokens)
    jax.block_until_ready(out)
    best = min(best, time.perf_counter() - start)
  return batch * cfg.max_seq_len / best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  p = PRESETS[args.preset]
  peak = flops.device_peak_flops()
  rows = []
  for name, (d, layers, heads, d_ff) in p["sizes"].items():
    cfg = ModelConfig(vocab_size=p["vocab"], d_model=d, n_layers=layers, n_heads=heads, d_ff=d_ff,
                      max_seq_len=p["seq"], dtype=p["dtype"]).validate()
    n = count_params(cfg)["N"]
    tok_s = step_throughput(cfg, p["batch"], args.steps)
    achieved = tok_s * flops.train_flops_per_token(cfg, p["seq"])
    ref = flops.measure_matmul_flops(p["batch"] * p["seq"], d, d_ff, p["dtype"], repeats=args.steps)
    row = {"size": name, "N": n, "d_model": d, "n_layers": layers, "seq_len": p["seq"],
           "batch": p["batch"], "dtype": p["dtype"], "tokens_per_s": tok_s,
           "achieved_flops": achieved, "matmul_flops": ref, "fraction_of_matmul": achieved / ref,
           "mfu": achieved / peak if peak else None}
    rows.append(row)
    print(f"{name:>5} N={n / 1e6:6.2f}M  {tok_s:10.0f} tok/s  {achieved / 1e9:8.1f} GFLOP/s  "
          f"matmul {ref / 1e9:8.1f} GFLOP/s  ratio {achieved / ref:5.1%}"
          + (f"  MFU {achieved / peak:5.1%}" if peak else ""), flush=True)
  machine = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
             "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
             "jax": jax.__version__, "peak_flops": peak, "load_average": os.getloadavg()}
  os.makedirs(RESULTS, exist_ok=True)
  base = os.path.join(RESULTS, f"train_throughput_{args.preset}")
  io.write_json(base + ".json", {"machine": machine, "rows": rows})
  lines = [f"Train step on {machine['device']} ({machine['backend']}, {machine['cpu_count']} CPUs, "
           f"load {machine['load_average'][0]:.1f}), jax {machine['jax']}.", "",
           "| size | N | seq | batch | dtype | tokens/s | GFLOP/s | matmul GFLOP/s | ratio | MFU |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] else "-"
    lines.append(f"| {r['size']} | {r['N']:,} | {r['seq_len']} | {r['batch']} | {r['dtype']} | "
                 f"{r['tokens_per_s']:,.0f} | {r['achieved_flops'] / 1e9:.1f} | "
                 f"{r['matmul_flops'] / 1e9:.1f} | {r['fraction_of_matmul']:.1%} | {mfu} |")
  io.write_text(base + ".md", "\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
