"""Extrapolation to overtrained models: fit on the Chinchilla-like rungs, predict the overtrained ones.

One simulated ladder (`laws.simulate`): 6 sizes from 5M to 400M parameters × 8 tokens-per-parameter
ratios from 5 to 2000; per model a validation loss (the Hoffmann law, 1% noise) and per-question
results from the Approach-2 model (2 tasks, 200 questions, 64 samples each). Every law is fitted
(point fit, as `python -m t2jax.fit` does before sampling) on the rungs with tokens per parameter
<= 100 and predicts the rest:
- Chinchilla: the validation loss;
- Approach 1: T(k), the task-mean −log pass@k for k = 1, 2, 4, …, 64, estimated per model from
  its samples (`targets`: the Beta-binomial MLE over its questions, integrated), for the fitted
  and the held-out models alike; models whose samples do not identify it (e.g. every question
  always solved) are censored: left out and counted;
- Approach 2: the task-mean pass@k for the same k (scored against the observed mean of the
  unbiased estimator, and against the simulator's noise-free expectation).
Relative error = predicted / observed − 1, summarised per approach and tokens-per-parameter ratio.

  python benchmarks/extrapolation.py     # a few minutes on 2 cores
Writes benchmarks/results/extrapolation.{json,md}.
"""

import os
import time

import numpy as np
from absl import app, flags

from t2jax import io, passk
from t2jax.laws import approach1, approach2, chinchilla, simulate, table, targets

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FIT_MAX_TOKENS_PER_PARAM = 100.0
K_GRID = 2.0 ** np.arange(7)

_SEEDS = flags.DEFINE_integer("num_ladders", 3, "Simulated ladders (seeds) to average over.")
_OUT = flags.DEFINE_string("out", RESULTS, "Output directory.")


def simulate_ladder(seed: int):
  N, D = simulate.ladder(num_sizes=6, num_ratios=8, N_range=(5e6, 4e8), tokens_per_param=(5, 2000))
  losses = simulate.chinchilla_losses(N, D, seed=seed)
  rows = simulate.approach2_rows(N, D, num_questions=200, n=64, seed=seed)
  return N, D, losses, table.results_from_rows(sorted(rows[0]), rows, f"ladder seed {seed}")


def _row(approach, ratio, observed, predicted, truth=None) -> dict:
  out = dict(approach=approach, tokens_per_param=float(ratio), observed=float(observed),
             predicted=float(predicted), rel_error=float(predicted / observed - 1.0))
  if truth is not None:
    out.update(truth=float(truth), rel_error_vs_truth=float(predicted / truth - 1.0))
  return out


def one_ladder(seed: int) -> list:
  N, D, losses, results = simulate_ladder(seed)
  held = D / N > FIT_MAX_TOKENS_PER_PARAM
  rows = []
  chin = chinchilla.fit(N[~held], D[~held], losses[~held]).params
  pred = np.asarray(chinchilla.loss(chin, N[held], D[held]))
  clean = np.asarray(chinchilla.loss(simulate.CHINCHILLA, N[held], D[held]))
  rows += [_row("chinchilla", d / n, o, p, t)
           for n, d, o, p, t in zip(N[held], D[held], losses[held], pred, clean)]

  held_R = results.D / results.N > FIT_MAX_TOKENS_PER_PARAM
  fit_res, test_res = results.select(~held_R), results.select(held_R)
  train_tables = approach1.table_from_results(fit_res, k_grid=K_GRID)
  test_tables = approach1.table_from_results(test_res, k_grid=K_GRID)
  a1 = {task: approach1.fit(t.N, t.D, t.k, t.loss).params for task, t in train_tables.items()}
  for task, t in test_tables.items():
    pred = np.asarray(approach1.neg_log_passk(a1[task], t.N, t.D, t.k))
    _, a, b = simulate.approach2_beta(simulate.APPROACH2_TASKS[task], t.N, t.D)
    truth_RxK = targets.expected_neg_log_passk(a, b, K_GRID)
    truth = truth_RxK[np.arange(len(t.k)), np.searchsorted(K_GRID, t.k)]
    rows += [_row("approach1", d / n, o, p, tr)
             for n, d, o, p, tr in zip(t.N, t.D, t.loss, pred, truth)]
  censored = [dict(split=split, task=task, model_id=m, status=status)
              for split, tables in (("fit", train_tables), ("heldout", test_tables))
              for task, t in tables.items() for m, status in t.censored.items()]

  floors = {task: p["floor"] for task, p in simulate.APPROACH2_TASKS.items()}
  data = approach2.prepare(fit_res, floors=floors)
  a2 = approach2.fit_mle(data)
  for model in np.unique(test_res.model_id):
    for t, task in enumerate(data.tasks):
      mask = (test_res.model_id == model) & (test_res.task == task)
      n, d = test_res.N[mask][0], test_res.D[mask][0]
      pred_K = np.asarray(approach2.expected_passk(a2, n, d, K_GRID))[t]
      _, a, b = simulate.approach2_beta(simulate.APPROACH2_TASKS[task], n, d)
      truth_K = np.asarray(passk.beta_passk(a, b, K_GRID))
      for k, p, tr in zip(K_GRID, pred_K, truth_K):
        obs = passk.observed_passk(test_res.n[mask], test_res.c[mask], test_res.nll[mask], int(k))
        rows.append(_row("approach2", d / n, obs, p, tr))
  for r in rows + censored:
    r["seed"] = seed
  return rows, censored


def summarize(rows: list, censored: list) -> dict:
  out = {}
  for approach in ("chinchilla", "approach1", "approach2"):
    sel = [r for r in rows if r["approach"] == approach]
    ratios = sorted({round(r["tokens_per_param"], 3) for r in sel})
    by_ratio = {}
    for ratio in ratios:
      errs = np.array([abs(r["rel_error"]) for r in sel if round(r["tokens_per_param"], 3) == ratio])
      by_ratio[f"{ratio:g}"] = {"median_abs_rel_error": float(np.median(errs)),
                                "num_points": int(errs.size)}
    errs = np.array([abs(r["rel_error"]) for r in sel])
    out[approach] = {"median_abs_rel_error": float(np.median(errs)),
                     "p90_abs_rel_error": float(np.quantile(errs, 0.9)),
                     "median_signed_rel_error": float(np.median([r["rel_error"] for r in sel])),
                     "num_points": int(errs.size), "by_tokens_per_param": by_ratio}
    if "rel_error_vs_truth" in sel[0]:
      out[approach]["median_abs_rel_error_vs_truth"] = float(
          np.median([abs(r["rel_error_vs_truth"]) for r in sel]))
      out[approach]["median_abs_observed_error_vs_truth"] = float(
          np.median([abs(r["observed"] / r["truth"] - 1.0) for r in sel]))
  out["approach1"]["censored"] = {
      split: {status: sum(c["split"] == split and c["status"] == status for c in censored)
              for status in sorted({c["status"] for c in censored if c["split"] == split})}
      for split in ("fit", "heldout")}
  return out


def markdown(summary: dict, seconds: float, num_ladders: int) -> str:
  quantity = {"chinchilla": "validation loss", "approach1": "T(k) = mean −log pass@k (k = 1…64)",
              "approach2": "mean pass@k (k = 1…64)"}
  ratios = list(summary["chinchilla"]["by_tokens_per_param"])
  lines = ["# Extrapolation to overtrained rungs", "",
           f"{num_ladders} simulated ladders (6 sizes 5M-400M × tokens/param 5-2000); laws fitted on "
           f"tokens/param <= {FIT_MAX_TOKENS_PER_PARAM:g}, scored on the rest "
           f"({seconds / 60:.1f} min).", "",
           "| approach | predicts | median abs. rel. error | 90th pct | median signed | vs noise-free "
           "truth | observed vs truth | " + " | ".join(f"D/N={r}" for r in ratios) + " |",
           "|---|---|---|---|---|---|---|" + "---|" * len(ratios)]
  for approach, s in summary.items():
    truth = s.get("median_abs_rel_error_vs_truth")
    observed = s.get("median_abs_observed_error_vs_truth")
    lines.append(f"| {approach} | {quantity[approach]} | {s['median_abs_rel_error']:.2%} | "
                 f"{s['p90_abs_rel_error']:.2%} | {s['median_signed_rel_error']:+.2%} | "
                 f"{'–' if truth is None else f'{truth:.2%}'} | "
                 f"{'–' if observed is None else f'{observed:.2%}'} | "
                 + " | ".join(f"{s['by_tokens_per_param'][r]['median_abs_rel_error']:.2%}"
                              for r in ratios) + " |")
  lines += ["", "Approach 1 targets from samples (Beta-binomial MLE per model × task); censored model × "
            f"tasks left out (fit / held out): {summary['approach1']['censored']}."]
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  start, rows, censored = time.time(), [], []
  for seed in range(_SEEDS.value):
    scored, left_out = one_ladder(seed)
    rows, censored = rows + scored, censored + left_out
    print(f"ladder {seed + 1}/{_SEEDS.value} done ({time.time() - start:.0f}s)", flush=True)
  summary = summarize(rows, censored)
  seconds = time.time() - start
  io.write_json(os.path.join(_OUT.value, "extrapolation.json"),
                {"summary": summary, "seconds": seconds, "num_ladders": _SEEDS.value,
                 "fit_max_tokens_per_param": FIT_MAX_TOKENS_PER_PARAM, "k_grid": K_GRID,
                 "approach1_censored": censored, "rows": rows})
  text = markdown(summary, seconds, _SEEDS.value)
  io.write_text(os.path.join(_OUT.value, "extrapolation.md"), text)
  print(text, flush=True)


if __name__ == "__main__":
  app.run(main)
