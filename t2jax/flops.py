"""FLOP accounting: training and forward FLOPs per token, attention, MFU, inference cost.

Conventions (as MaxText): a matmul of an [m, k] by [k, n] matrix costs 2·m·k·n FLOPs; the backward
pass costs twice the forward; causal attention is counted at half of full attention (only the
lower triangle does useful work). The embedding lookup costs nothing; the output head is a matmul.

  forward per token  = 2·N + 2·n_layers·T·(n_heads·head_dim)   (causal; 4·… for full attention)
  training per token = 3 × forward
  MFU                = tokens/s × training FLOPs per token / (peak FLOP/s per device × devices)
"""

import functools
import time

import jax
import jax.numpy as jnp

from t2jax.model import ModelConfig, count_params

# Dense bf16 peak FLOP/s per device (vendor figures, no sparsity).
PEAK_FLOPS = {
    "h100": 989e12,
    "h200": 989e12,
    "a100": 312e12,
    "l4": 121e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,
    "tpu v6e": 918e12,
}


def attention_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True) -> float:
  """Forward FLOPs per token of QKᵀ and attention·V over a sequence of `seq_len`."""
  full = 4.0 * cfg.n_layers * seq_len * cfg.n_heads * cfg.head_dim
  return full / 2 if causal else full


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, causal: bool = True) -> float:
  return 2.0 * count_params(cfg)["N"] + attention_flops_per_token(cfg, seq_len, causal)


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  return 3.0 * forward_flops_per_token(cfg, seq_len)


def training_flops(n_params: float, tokens: float) -> float:
  """The laws' training cost C_train = 6·N·D."""
  return 6.0 * n_params * tokens


def inference_flops_per_query(n_params: float, k: float, gen_tokens: float,
                              prompt_tokens: float = 0.0, share_prompt: bool = True) -> float:
  """2·N per token: the prompt encoded once and shared by k samples, or re-encoded per sample."""
  prompt_copies = 1.0 if share_prompt else k
  return 2.0 * n_params * (prompt_copies * prompt_tokens + k * gen_tokens)


def device_peak_flops(device=None) -> float | None:
  """Peak dense bf16 FLOP/s of an accelerator from its device kind; None when unknown (e.g. CPU)."""
  device = device or jax.devices()[0]
  kind = device.device_kind.lower()
  for name, peak in sorted(PEAK_FLOPS.items(), key=lambda kv: -len(kv[0])):
    if name in kind:
      return peak
  return None


@functools.cache
def measure_matmul_flops(m: int = 2048, k: int = 512, n: int = 2048, dtype=jnp.float32,
                         repeats: int = 10) -> float:
  """Achieved FLOP/s of one jitted [m, k]·[k, n] matmul on the default device (best of repeats;
  measured once per process and shape)."""
  a = jnp.ones((m, k), dtype)
  b = jnp.ones((k, n), dtype)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * m * k * n / best


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_device: float,
        num_devices: int) -> float:
  return tokens_per_second * flops_per_token / (peak_flops_per_device * num_devices)
