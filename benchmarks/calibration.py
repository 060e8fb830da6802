"""Calibration of the Approach-2 posterior: do 90% intervals cover the truth about 90% of the time?

Each data set is simulated from the Approach-2 model with known parameters (`laws.simulate`,
alternating the multiple-choice and the generative task) on a ladder shaped like the `cpu` preset:
5 sizes from 5M to 400M parameters × 4 tokens-per-parameter ratios from 10 to 80, 200 questions per
model, 64 samples per question. The MAP fit, NUTS posterior and backtest-calibrated model discrepancy
(`--discrepancy=backtest`, the default) run as `python -m t2jax.fit` runs them; every draw goes
through the T2 planner with its discrepancy. Per data set and (C, C_inf) we record whether the 90%
interval holds
- N*: the true optimal model size (the planner run on the true parameters);
- pass@k: the true E[pass@k] at the true optimum (N*, D*, k*).
The target is 85-95% coverage. A data set whose chains fail the convergence checks is refitted
with twice the draws (as `t2jax.fit` does); if it still fails it is counted and left out of the
coverage.

  nice python benchmarks/calibration.py --num_questions=100 --n=32 --num_warmup=500 \
      --num_samples=500 --num_datasets=100   # ~50 s per data set and worker, 2 workers
  python benchmarks/calibration.py --num_datasets=4     # a quick look
Writes benchmarks/results/calibration.{json,md} (rewritten after every data set); a run started
again with the same settings and output directory resumes, skipping the data sets recorded there.
Setting JAX_COMPILATION_CACHE_DIR lets the worker processes reuse compiled fits.
"""

import concurrent.futures
import multiprocessing
import os
import time
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from t2jax import io
from t2jax.fit import backtest, fitting, planning
from t2jax.fit import config as fit_config
from t2jax.laws import approach2, discrepancy, optimize, simulate, table

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BUDGETS = (1e19, 1e20)  # training FLOPs C
INFERENCE_BUDGETS = (1e9, 1e11)  # per-token inference FLOPs C_inf = 2·N·k
TASKS_PER_WORKER = 10  # data sets per worker in one pool; a fresh pool takes the next chunk

_NUM = flags.DEFINE_integer("num_datasets", 50, "Simulated data sets.")
_QUESTIONS = flags.DEFINE_integer("num_questions", 200, "Questions per model and task.")
_SAMPLES = flags.DEFINE_integer("n", 64, "Samples drawn per question.")
# `t2jax.fit`'s defaults: with 150-300 warm-up steps the dense mass matrix is too rough for the
# loss law's ridges and 1-2% of the transitions diverge.
_WARMUP = flags.DEFINE_integer("num_warmup", 500, "NUTS warm-up steps per chain.")
_DRAWS = flags.DEFINE_integer("num_samples", 500, "NUTS draws per chain.")
_CHAINS = flags.DEFINE_integer("num_chains", 2, "NUTS chains.")
_RETRIES = flags.DEFINE_integer("retries", 1, "Refits, each with twice the draws, of a data set "
                                "whose chains fail the checks (as `t2jax.fit`).")
_RHAT = flags.DEFINE_float("rhat_max", 1.05, "Largest acceptable split r-hat.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Data sets fitted at once (one process each).")
_DISCREPANCY = flags.DEFINE_enum("discrepancy", "backtest", ["backtest", "none"],
                                 "Model discrepancy as `t2jax.fit` calibrates it, or none.")
_OUT = flags.DEFINE_string("out", RESULTS, "Output directory.")


def ladder():
  return simulate.ladder(num_sizes=5, num_ratios=4, N_range=(5e6, 4e8), tokens_per_param=(10, 80))


def true_params(task: str) -> dict:
  """The simulator's parameters as an Approach-2 params dict with one task."""
  return {k: np.array([v]) for k, v in simulate.APPROACH2_TASKS[task].items()}


def one_dataset(i: int, settings: dict) -> dict:
  """Simulates data set i, fits it and scores its intervals (runs in a worker process)."""
  warnings.filterwarnings("ignore", category=RuntimeWarning)
  start = time.time()
  task = ("mc4", "gen")[i % 2]
  N, D = ladder()
  rows = simulate.approach2_rows(N, D, tasks={task: simulate.APPROACH2_TASKS[task]},
                                 num_questions=settings["num_questions"], n=settings["n"],
                                 seed=1000 + i)
  results = table.results_from_rows(sorted(rows[0]), rows, f"simulated data set {i}")
  data = approach2.prepare(results, floors={task: simulate.APPROACH2_TASKS[task]["floor"]})
  mle = approach2.fit_mle(data)
  posts, checks, attempts = fitting.sample_until_converged(
      lambda scale: {"approach2": approach2.sample_posterior(
          data, num_chains=settings["num_chains"], num_warmup=scale * settings["num_warmup"],
          num_samples=scale * settings["num_samples"], seed=i, mle=mle)},
      retries=settings["retries"], rhat_max=settings["rhat_max"])
  post, diag = posts["approach2"], checks["approach2"]
  draws = dict(post.draws)
  scale = None
  if settings["discrepancy"] == "backtest":  # as `t2jax.fit` does: backtests, then widened draws
    floors = {task: simulate.APPROACH2_TASKS[task]["floor"]}
    inputs = types.SimpleNamespace(losses=None, floors=floors)
    fitted_range = {"tokens_per_param_min": float(np.min(D / N)),
                    "tokens_per_param_max": float(np.max(D / N)),
                    "compute_min": float(np.min(6.0 * N * D)),
                    "compute_max": float(np.max(6.0 * N * D))}
    scale = backtest.run_backtests(inputs, results, posts, fitted_range,
                                   fit_config.default_config())["approach2"]["scale"]
    draws.update(discrepancy.draws(scale, post.num_draws, [task], seed=i))
  fn = planning.PASSK_FNS["approach2"]
  truth = optimize.frontier(approach2.task_mean_passk, optimize.as_draws(true_params(task)),
                            BUDGETS, INFERENCE_BUDGETS)
  plans = optimize.frontier(fn, draws, BUDGETS, INFERENCE_BUDGETS)
  n_true_IxB, d_true_IxB, k_true_IxB = (truth[key][0] for key in ("N", "D", "k"))
  acc_true_IxB = truth["accuracy"][0]
  with jax.enable_x64(True):
    acc_SxIxB = np.asarray(jax.vmap(lambda p: fn(p, n_true_IxB, d_true_IxB, k_true_IxB))(
        jax.tree.map(jnp.asarray, draws)))
  n_sum = optimize.summarize(plans["N"])
  acc_sum = optimize.summarize(acc_SxIxB)
  return {
      "dataset": i, "task": task, "converged": diag["converged"], "problems": diag["problems"],
      "discrepancy": scale,
      "attempts": attempts,
      "rhat_max": diag["rhat_max"], "ess_min": diag["ess_min"],
      "num_divergences": diag["num_divergences"],
      "N_true": n_true_IxB, "N_lo": n_sum["lo"], "N_median": n_sum["median"], "N_hi": n_sum["hi"],
      "N_covered": (n_sum["lo"] <= n_true_IxB) & (n_true_IxB <= n_sum["hi"]),
      "k_true": k_true_IxB,
      "passk_true": acc_true_IxB, "passk_lo": acc_sum["lo"], "passk_median": acc_sum["median"],
      "passk_hi": acc_sum["hi"],
      "passk_covered": (acc_sum["lo"] <= acc_true_IxB) & (acc_true_IxB <= acc_sum["hi"]),
      "seconds": time.time() - start,
  }


def summarize(records: list, settings: dict, seconds: float) -> dict:
  used = [r for r in records if r["converged"]]
  N, D = ladder()
  out = {"num_datasets": len(records), "num_converged": len(used), "seconds": seconds,
         "budgets": BUDGETS, "inference_budgets": INFERENCE_BUDGETS,
         "settings": dict(settings, ladder_N=sorted(set(N.tolist())),
                          tokens_per_param=sorted(set(np.round(D / N, 6).tolist()))),
         "target": [0.85, 0.95]}
  for key in ("N", "passk"):
    if used:
      cover_DxIxB = np.array([r[f"{key}_covered"] for r in used], np.float64)
      out[f"{key}_coverage"] = float(cover_DxIxB.mean())
      out[f"{key}_coverage_by_budget"] = cover_DxIxB.mean(axis=0)  # [I, B]
  out["records"] = records
  return out


def markdown(summary: dict) -> str:
  s = summary["settings"]
  lines = [
      "# Approach-2 posterior calibration", "",
      f"{summary['num_datasets']} simulated data sets ({summary['num_converged']} converged, used), "
      f"{summary['seconds'] / 60:.1f} min. Ladder: {len(s['ladder_N'])} sizes "
      f"{s['ladder_N'][0]:.3g}-{s['ladder_N'][-1]:.3g} × tokens/param {s['tokens_per_param']}, "
      f"{s['num_questions']} questions × {s['n']} samples; NUTS {s['num_chains']} chains × "
      f"({s['num_warmup']} warm-up + {s['num_samples']} draws; a data set whose chains fail the "
      f"checks is refitted up to {s.get('retries', 0)} times with twice as many, as `t2jax.fit` "
      f"does; {sum(r.get('attempts', 1) > 1 for r in summary['records'])} were). Model "
      f"discrepancy: {s.get('discrepancy', 'none')}.", "",
      "Fraction of 90% posterior intervals that contain the truth (target 85-95%):", "",
      "| quantity | all | " + " | ".join(f"C={c:.0e}, C_inf={ci:.0e}" for ci in summary["inference_budgets"]
                                       for c in summary["budgets"]) + " |",
      "|---|---|" + "---|" * (len(summary["budgets"]) * len(summary["inference_budgets"]))]
  for key, name in (("N", "N*"), ("passk", "pass@k* at the true optimum")):
    if f"{key}_coverage" in summary:
      by = np.asarray(summary[f"{key}_coverage_by_budget"])
      lines.append(f"| {name} | {summary[f'{key}_coverage']:.1%} | "
                   + " | ".join(f"{v:.1%}" for v in by.ravel()) + " |")
  bad = [r for r in summary["records"] if not r["converged"]]
  if bad:
    lines += ["", "Unconverged data sets (left out): "
              + "; ".join(f"{r['dataset']} ({', '.join(r['problems'])})" for r in bad)]
  return "\n".join(lines) + "\n"


def _finished(settings: dict) -> tuple:
  """(records, seconds) of an earlier run in the output directory with the same settings (a long
  run resumes where it stopped); ([], 0) when there is none or its settings differ."""
  path = os.path.join(_OUT.value, "calibration.json")
  if not os.path.exists(path):
    return [], 0.0
  old = io.read_json(path)
  if {k: v for k, v in old.get("settings", {}).items() if k in settings} != settings:
    return [], 0.0
  return [r for r in old["records"] if r["dataset"] < _NUM.value], float(old["seconds"])


def main(argv):
  del argv
  settings = {"num_questions": _QUESTIONS.value, "n": _SAMPLES.value, "num_chains": _CHAINS.value,
              "num_warmup": _WARMUP.value, "num_samples": _DRAWS.value, "rhat_max": _RHAT.value,
              "retries": _RETRIES.value, "discrepancy": _DISCREPANCY.value}
  records, seconds_before = _finished(settings)
  start = time.time()
  done = {r["dataset"] for r in records}
  if done:
    print(f"resuming: {len(done)} data sets already in {_OUT.value}/calibration.json", flush=True)
  # A few data sets per process: a long-lived one exhausted the memory maps of XLA's LLVM JIT
  # ("Cannot allocate memory", then a crash) after ~30 data sets. A fresh pool per chunk, not
  # `max_tasks_per_child`, which deadlocks once a worker retires (CPython gh-115634, 3.11-3.14).
  todo = [i for i in range(_NUM.value) if i not in done]
  chunk = _WORKERS.value * TASKS_PER_WORKER
  summary = summarize(records, settings, seconds_before)
  for first in range(0, len(todo), chunk):
    with concurrent.futures.ProcessPoolExecutor(
        _WORKERS.value, mp_context=multiprocessing.get_context("spawn")) as pool:
      futures = [pool.submit(one_dataset, i, settings) for i in todo[first:first + chunk]]
      for future in concurrent.futures.as_completed(futures):
        r = future.result()
        records = sorted(records + [r], key=lambda x: x["dataset"])
        print(f"[{len(records)}/{_NUM.value}] data set {r['dataset']} ({r['task']}): "
              f"converged={r['converged']} r-hat={r['rhat_max']:.3f}, N* covered "
              f"{np.mean(r['N_covered']):.0%}, pass@k covered {np.mean(r['passk_covered']):.0%} "
              f"({r['seconds']:.0f}s)", flush=True)
        summary = summarize(records, settings, seconds_before + time.time() - start)
        io.write_json(os.path.join(_OUT.value, "calibration.json"), summary)
        io.write_text(os.path.join(_OUT.value, "calibration.md"), markdown(summary))
  print(markdown(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
