"""Named model sizes: a tiny CPU range and the T2 paper's range (about 5M to 901M).

Each name gives N, the parameter count the laws use (blocks + output head, see `model.count_params`),
at the vocabulary its presets use: `cpu-*` at the shipped 2,048-token BPE, `t2-*` at NeoX-20B's 50,432
padded rows. With another vocabulary N changes (the head is V·d_model) and the name is only a label.
"""

import dataclasses
import math

from t2jax.model import ModelConfig, count_params

# name: (d_model, n_layers, n_heads, d_ff)
SIZES = {
    "cpu-30k": (12, 2, 2, 32),  # below the cpu ladder's sizes: a validate stage choice
    "cpu-40k": (16, 2, 2, 48),
    "cpu-60k": (24, 2, 2, 64),
    "cpu-90k": (32, 2, 2, 96),
    "cpu-150k": (48, 2, 3, 128),
    "cpu-280k": (64, 3, 4, 176),
    "cpu-640k": (96, 4, 6, 256),
    "cpu-1m": (128, 4, 4, 352),
    "cpu-2m": (160, 6, 5, 432),
    "cpu-3m": (192, 6, 6, 512),
    "cpu-5m": (256, 6, 8, 688),
    "t2-5m": (96, 2, 3, 256),
    "t2-7m": (128, 3, 4, 352),
    "t2-11m": (192, 4, 6, 512),
    "t2-16m": (256, 4, 4, 688),
    "t2-24m": (320, 6, 5, 864),
    "t2-34m": (384, 8, 6, 1024),
    "t2-51m": (512, 8, 8, 1376),
    "t2-82m": (640, 10, 10, 1728),
    "t2-124m": (768, 12, 12, 2048),
    "t2-180m": (896, 14, 14, 2400),
    "t2-254m": (1024, 16, 16, 2752),
    "t2-421m": (1280, 18, 20, 3456),
    "t2-644m": (1536, 20, 24, 4096),
    "t2-901m": (1792, 21, 28, 4800),
}

CPU_VOCAB = 2048
PAPER_VOCAB = 50432


def model_config(size: str, *, vocab_size: int, max_seq_len: int, **overrides) -> ModelConfig:
  """The ModelConfig of a named size; `overrides` set numerics (dtype, remat, ...)."""
  if size not in SIZES:
    raise ValueError(f"model size {size!r} is unknown; choose one of {sorted(SIZES)}")
  d_model, n_layers, n_heads, d_ff = SIZES[size]
  cfg = ModelConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                    d_ff=d_ff, max_seq_len=max_seq_len)
  return dataclasses.replace(cfg, **overrides).validate()


def family(size: str) -> str:
  """The size family of a name: "cpu" for `cpu-*`, "t2" for `t2-*`."""
  return size.partition("-")[0]


def family_sizes(family_name: str, vocab_size: int) -> dict:
  """{name: N} of every size of a family at `vocab_size`."""
  counts = {name: count_params(model_config(name, vocab_size=vocab_size, max_seq_len=1))["N"]
            for name in SIZES if family(name) == family_name}
  if not counts:
    raise ValueError(f"size family {family_name!r} has no sizes; choose one of "
                     f"{sorted({family(name) for name in SIZES})}")
  return counts


def nearest_size(N: float, vocab_size: int, family_name: str) -> tuple[str, int]:
  """The size of `family_name` whose N at `vocab_size` is nearest to N in log N, with that N."""
  if not N > 0:
    raise ValueError(f"nearest_size: N={N} must be a positive number of parameters")
  counts = family_sizes(family_name, vocab_size)
  name = min(counts, key=lambda s: abs(math.log(counts[s] / N)))
  return name, counts[name]
