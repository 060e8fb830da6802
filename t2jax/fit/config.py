"""Fit and plan settings: `default_config` (embedded in the ladder config as `config.fit`) and checks.

Only numpy and ml_collections are imported, so that a config file can build the settings cheaply.
"""

from typing import Optional

import ml_collections
import numpy as np

LAWS = ("chinchilla", "approach1", "approach2")
DISCREPANCY = ("backtest", "none")
LIKELIHOODS = ("auto", "normal", "student_t")
ACCURACY_SOURCES = ("samples", "nll")


def default_config() -> ml_collections.ConfigDict:
  """Fit and plan settings (embedded in the ladder config as `config.fit`)."""
  cfg = ml_collections.ConfigDict()
  cfg.laws = "auto"  # "auto" (every law the tables support) or a comma list of LAWS
  cfg.accuracy = "samples"  # 'samples': counts c of n where drawn; 'nll': p = exp(-nll) only
  cfg.k_grid = ()  # Approach-1 k values; () = 1, 2, 4, ... up to each task's smallest n
  cfg.fit_max_tokens_per_param = 100.0  # rows above are held out, where no `heldout` flag is given
  cfg.floors = ""  # chance accuracy per task, "task=0.25,task2=0"; unlisted: task registry, else 0
  cfg.num_chains = 2
  cfg.num_warmup = 500
  cfg.num_samples = 500
  cfg.seed = 0
  cfg.rhat_max = 1.05
  cfg.retries = 1  # refits of a law whose chains fail the checks, each with twice the draws
  cfg.allow_unconverged = False
  cfg.likelihood = "auto"  # loss noise: 'normal', 'student_t', or 'auto' (both, PSIS-LOO picks)
  cfg.discrepancy = "backtest"  # 'backtest': model discrepancy calibrated by backtests; 'none'
  cfg.budgets = (1e18, 1e19, 2.56e19, 1e20, 1e21)  # training FLOPs C (2.56e19: the T2 paper's)
  cfg.inference_budgets = (1e8, 1e9, 2e9, 1e10)  # per-token inference FLOPs C_inf = 2·N·k
  cfg.queries = (1e6, 1e8, 1e10)  # lifecycle: queries Q served
  cfg.prompt_tokens = 128.0  # lifecycle: prompt tokens, encoded once per query
  cfg.gen_tokens = 32.0  # lifecycle: generated tokens per sample
  cfg.max_plan_draws = 400  # posterior draws pushed through the planner (thinned evenly)
  cfg.bound_n = True  # search N only within the fitted model sizes ×/÷ n_range_factor
  cfg.n_range_factor = 2.0  # N* in [N_min/f, f·N_max] of the fitted models (with bound_n)
  return cfg


def log(msg: str) -> None:
  """A progress line on stdout, prefixed with [t2jax.fit]."""
  print(f"[t2jax.fit] {msg}", flush=True)


def floats(cfg, name: str, *, allow_empty: bool = False, minimum: float = 0.0) -> np.ndarray:
  """`cfg[name]` as a 1-D float64 array of finite numbers > `minimum`; raises naming the field."""
  values = np.asarray(tuple(cfg[name]), np.float64)
  if values.ndim != 1 or (not allow_empty and values.size == 0) or not np.all(
      np.isfinite(values) & (values > minimum)):
    raise ValueError(f"fit config `{name}`={tuple(cfg[name])!r}: give a list of finite numbers "
                     f"> {minimum:g}, e.g. --config.{name}='(1e20, 1e21)'")
  return values


def k_grid(cfg) -> Optional[np.ndarray]:
  """The configured Approach-1 k values, or None for each task's default grid."""
  return np.asarray(tuple(cfg.k_grid), np.float64) if cfg.k_grid else None


def check_config(cfg) -> None:
  """Raises ValueError for a bad fit/plan setting, naming the field and the fix."""
  if cfg.accuracy not in ACCURACY_SOURCES:
    raise ValueError(f"fit config `accuracy`={cfg.accuracy!r}; use one of {ACCURACY_SOURCES}")
  requested_laws(cfg)
  if cfg.likelihood not in LIKELIHOODS:
    raise ValueError(f"fit config `likelihood`={cfg.likelihood!r}; use 'normal', 'student_t' (for "
                     "ladders with outlier losses) or 'auto' (both fitted, PSIS-LOO picks)")
  if cfg.discrepancy not in DISCREPANCY:
    raise ValueError(f"fit config `discrepancy`={cfg.discrepancy!r}; use 'backtest' (intervals "
                     "widened by the backtested model error) or 'none' (the law taken as exact)")
  for name, low in (("num_chains", 1), ("num_warmup", 1), ("num_samples", 2), ("max_plan_draws", 1),
                    ("retries", 0)):
    if int(cfg[name]) < low:
      raise ValueError(f"fit config `{name}`={cfg[name]} must be >= {low}")
  if not cfg.rhat_max > 1.0:
    raise ValueError(f"fit config `rhat_max`={cfg.rhat_max} must be > 1 (1.01-1.1 is usual)")
  if not cfg.fit_max_tokens_per_param > 0:
    raise ValueError(f"fit config `fit_max_tokens_per_param`={cfg.fit_max_tokens_per_param} "
                     "must be > 0")
  floats(cfg, "budgets")
  if any(c_inf <= 0 for c_inf in cfg.inference_budgets):
    raise ValueError(f"fit config `inference_budgets`={tuple(cfg.inference_budgets)!r}: every "
                     "C_inf must be > 0 (k = C_inf/(2N) >= 1); drop 0, the training-only optimum "
                     "(k = 1, no inference cost) is reported beside every row anyway")
  floats(cfg, "inference_budgets")
  floats(cfg, "queries")
  floats(cfg, "k_grid", allow_empty=True, minimum=0.999)
  if cfg.prompt_tokens < 0 or cfg.gen_tokens <= 0:
    raise ValueError(f"fit config: need prompt_tokens >= 0 and gen_tokens > 0, got "
                     f"{cfg.prompt_tokens}, {cfg.gen_tokens}")
  if not isinstance(cfg.bound_n, bool):
    raise ValueError(f"fit config `bound_n`={cfg.bound_n!r} must be True or False "
                     "(--config.bound_n=False lifts the bound on N)")
  if not (np.isfinite(cfg.n_range_factor) and cfg.n_range_factor >= 1.0):
    raise ValueError(f"fit config `n_range_factor`={cfg.n_range_factor!r} must be a finite number "
                     ">= 1 (N* within [N_min/f, f·N_max] of the fitted models; 2 is the default); "
                     "to lift the bound use --config.bound_n=False")
  parse_floors(cfg.floors)


def requested_laws(cfg) -> Optional[tuple]:
  """The laws in `cfg.laws`, or None for "auto"."""
  if cfg.laws == "auto":
    return None
  laws = tuple(s.strip() for s in str(cfg.laws).split(",") if s.strip())
  unknown = [law for law in laws if law not in LAWS]
  if unknown or not laws:
    raise ValueError(f"fit config `laws`={cfg.laws!r}: unknown {unknown}; use 'auto' or a comma "
                     f"list of {', '.join(LAWS)}")
  return laws


def parse_floors(text: str) -> dict:
  """"task=0.25,gen=0" → {"task": 0.25, "gen": 0.0}."""
  floors = {}
  for item in filter(None, (s.strip() for s in str(text).split(","))):
    name, sep, value = item.partition("=")
    try:
      floors[name.strip()] = float(value)
    except ValueError:
      floors[name.strip()] = -1.0
    if not sep or not 0.0 <= floors[name.strip()] < 1.0:
      raise ValueError(f"fit config `floors` entry {item!r}: write task=chance with chance in "
                       "[0, 1), e.g. --config.floors='sciq=0.25,arithmetic=0'")
  return floors
