"""Simulators with known parameters, at realistic ladder shapes and noise (tests, benchmarks,
calibration).

- `ladder`: N from ~5M to ~900M parameters × 5 to 2000 tokens per parameter;
- `chinchilla_losses`: L(N, D) with multiplicative log-normal noise (1-2%);
- `approach1_table`: −log pass@k rows from the Approach-1 law, same noise;
- `approach2_rows`: results.jsonl rows from the Approach-2 model: per question p_i ~ Beta(a, b)
  drawn independently per model (the model's own assumption), c_i ~ Binomial(n, p_i), and a gold
  NLL whose mean over questions is the task loss L̂ in expectation and that falls as p_i rises.
"""

import numpy as np
from scipy import special

LOG_NU_MAX = float(np.log(1e4))  # approach2.LOG_NU_MAX (this module is numpy-only)

# Hoffmann et al. (2022), Approach 3.
CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)

# An Approach-1 law in which every term matters across the ladder and k in 1..1024.
APPROACH1 = dict(E=0.1, A=40.0, B=60.0, G=1.5, alpha=0.3, beta=0.3, gamma=0.5)

# Approach-2 tasks: a 4-way multiple-choice task (floor 1/4; accuracy ~0.3 to ~0.8 on the ladder)
# and a generative task (floor 0; accuracy ~0.02 to ~0.6). Task loss is the per-answer gold NLL.
APPROACH2_TASKS = {
    "mc4": dict(E=1.0, A=60.0, B=80.0, alpha=0.3, beta=0.28, theta1=4.66, theta2=3.17,
                theta3=1.54, theta4=-0.5, floor=0.25, ceil=1.0),
    "gen": dict(E=1.5, A=200.0, B=300.0, alpha=0.33, beta=0.3, theta1=3.17, theta2=1.54,
                theta3=0.0, theta4=0.2, floor=0.0, ceil=1.0),
}


def ladder(*, num_sizes: int = 12, num_ratios: int = 20, N_range=(5e6, 9e8),
           tokens_per_param=(5.0, 2000.0)):
  """Every size × every tokens-per-parameter ratio, log-spaced: (N, D) of shape (sizes·ratios,)."""
  N_s = np.geomspace(*N_range, num_sizes)
  ratio_r = np.geomspace(*tokens_per_param, num_ratios)
  N = np.repeat(N_s, num_ratios)
  return N, N * np.tile(ratio_r, num_sizes)


def chinchilla_losses(N, D, *, params=CHINCHILLA, noise: float = 0.01, seed: int = 0):
  """L(N, D) × exp(noise · z), z ~ N(0, 1)."""
  rng = np.random.default_rng(seed)
  N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
  clean = params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
  return clean * np.exp(noise * rng.standard_normal(clean.shape))


def approach1_table(N, D, k_grid, *, params=APPROACH1, noise: float = 0.01, seed: int = 0):
  """Every (N, D) row × every k: flat (N, D, k, loss) arrays, loss with multiplicative noise."""
  rng = np.random.default_rng(seed)
  k_grid = np.asarray(k_grid, np.float64)
  N = np.repeat(np.asarray(N, np.float64), len(k_grid))
  D = np.repeat(np.asarray(D, np.float64), len(k_grid))
  k = np.tile(k_grid, len(N) // len(k_grid))
  clean = (params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
           + params["G"] * k ** -params["gamma"])
  noisy = clean * np.exp(noise * rng.standard_normal(clean.shape))
  return N, D, k, noisy


def approach2_beta(params: dict, N, D):
  """(task loss L̂, a, b) of the Approach-2 model for one task's params (floats), numpy."""
  N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
  L = params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
  floor = params["floor"]
  mu = floor + (params["ceil"] - floor) * special.expit(params["theta1"] - params["theta2"] * L)
  nu = np.exp(params["theta3"] + params["theta4"] * L)
  return L, mu * nu, (1 - mu) * nu


def approach2_task_suite(num_tasks: int, *, spread: float = 0.1, seed: int = 0) -> dict:
  """`num_tasks` tasks cycling through `APPROACH2_TASKS`, each loss-law constant and link slope
  scaled by exp(spread·z), z ~ N(0, 1) (the first copy of each template is left exact)."""
  rng = np.random.default_rng(seed)
  templates = list(APPROACH2_TASKS.items())
  suite = {}
  for i in range(num_tasks):
    name, params = templates[i % len(templates)]
    params = dict(params)
    if i >= len(templates):
      for key in ("E", "A", "B", "alpha", "beta", "theta2"):
        params[key] *= float(np.exp(spread * rng.standard_normal()))
    suite[f"{name}_{i}"] = params
  return suite


def approach2_rows(N, D, *, tasks=APPROACH2_TASKS, num_questions: int = 500, n: int = 64,
                   nll_spread: float = 0.3, seed: int = 0) -> list:
  """results.jsonl rows (schema_version 1) for every model (N[i], D[i]) × task × question.

  Gold NLL: nll_i = L̂ · exp(s·z_i − s²/2) with s = `nll_spread` and z_i = −Φ⁻¹(F_Beta(p_i)),
  so z_i ~ N(0, 1), E[nll_i] = L̂ and harder questions (low p_i) have higher NLL. Each question
  has a fixed gold answer length of 1-8 tokens (`gold_tokens`).
  """
  rng = np.random.default_rng(seed)
  rows = []
  for task, params in tasks.items():
    gold_tokens_Q = rng.integers(1, 9, num_questions)
    for N_m, D_m in zip(np.asarray(N, np.float64), np.asarray(D, np.float64)):
      L, a, b = approach2_beta(params, N_m, D_m)
      p_Q = rng.beta(a, b, num_questions)
      c_Q = rng.binomial(n, p_Q)
      z_Q = -special.ndtri(np.clip(special.betainc(a, b, p_Q), 1e-12, 1 - 1e-12))
      nll_Q = L * np.exp(nll_spread * z_Q - 0.5 * nll_spread ** 2)
      model_id = f"sim-N{N_m:.4g}-D{D_m:.4g}"
      rows.extend(
          dict(schema_version=1, model_id=model_id, N=float(N_m), D=float(D_m), task=task,
               question_id=f"{task}-{q}", n=n, c=int(c_Q[q]), nll=float(nll_Q[q]),
               nll_per_token=float(nll_Q[q] / gold_tokens_Q[q]), gold_tokens=int(gold_tokens_Q[q]))
          for q in range(num_questions))
  return rows
