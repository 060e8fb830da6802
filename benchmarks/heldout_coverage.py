"""Do the fit's 90% intervals hold out of sample? Loss ladders fitted on one part, scored on the rest.

Two sources, each fitted with `t2jax.fit.fitting.fit_tables` (Chinchilla point fit + NUTS, as
`python -m t2jax.fit` runs it) twice: with the backtest-calibrated model discrepancy
(`fit.discrepancy="backtest"`, the default) and without it (`"none"`: the law taken as exact, its
fitted noise only). Reported per case: the median absolute relative error of the predicted loss on
the held-out rows and the coverage of the 90% posterior predictive interval.

- `porian`: the shipped isoFLOP runs of Porian et al. (2024) (`../shared/data/scaling/
  porian2024_isoflop_points.csv`), one configuration at a time: fit on the lower-compute half of
  its isoFLOP budgets, predict the upper half (real data; the compute extrapolation the planner
  makes).
- `misspecified`: losses simulated from a law the fit does not contain, L = E + A/N^α + B/D^β +
  c·(log D − log D_0)² (a curvature term in log D), 1% noise, on a 6-size × 8-ratio ladder; fit on
  D/N <= 40, predict D/N > 40 (the overtraining extrapolation of T2).
- `floor`: the same ladder and split from a law with a D-dependent floor, L = E·(D/D_0)^−0.03 +
  A/N^α + B/D^β (the floor keeps falling with data where the fitted law has it constant), which
  misleads the extrapolation more than the curvature does.

  python benchmarks/heldout_coverage.py                         # ~25 min on 2 cores
  python benchmarks/heldout_coverage.py --cases=porian
Writes benchmarks/results/heldout_coverage.{json,md}.
"""

import concurrent.futures
import csv
import multiprocessing
import os
import tempfile
import time

import numpy as np
from absl import app, flags

from t2jax import cli, io
from t2jax.fit import config as fit_config
from t2jax.fit import fitting
from t2jax.laws import simulate

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PORIAN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                      "data", "scaling", "porian2024_isoflop_points.csv")
MODES = ("backtest", "none")

SOURCES = ("porian", "misspecified", "floor")
_CASES = flags.DEFINE_list("cases", list(SOURCES), ", ".join(SOURCES))
_SIMS = flags.DEFINE_integer("num_sims", 8, "Simulated ladders of each misspecified law.")
_WORKERS = flags.DEFINE_integer("workers", 2, "Cases fitted at once (one process each).")
_WARMUP = flags.DEFINE_integer("num_warmup", 300, "NUTS warm-up per chain.")
_SAMPLES = flags.DEFINE_integer("num_samples", 300, "NUTS draws per chain.")
_OUT = flags.DEFINE_string("out", RESULTS, "Output directory.")


def porian_cases() -> list:
  """(name, rows) per configuration: rows {N, D, loss, heldout}, held out above the median budget."""
  with open(PORIAN) as f:
    rows = list(csv.DictReader(f))
  out = []
  for name in sorted({r["config"] for r in rows}):
    sel = [r for r in rows if r["config"] == name]
    budgets = sorted({float(r["flops"]) for r in sel})
    cut = budgets[len(budgets) // 2 - 1]  # lower half of the budgets fitted
    out.append((f"porian {name}", [dict(N=float(r["N"]), D=float(r["D"]), loss=float(r["loss"]),
                                        heldout=float(r["flops"]) > cut) for r in sel]))
  return out


def misspecified_cases(num: int, law: str) -> list:
  """(name, rows) per simulated ladder from a law the fit lacks (module doc): `law` "misspecified"
  (curvature in log D) or "floor" (a D-dependent floor)."""
  out = []
  for seed in range(num):
    N, D = simulate.ladder(num_sizes=6, num_ratios=8, N_range=(5e6, 4e8), tokens_per_param=(5, 2000))
    p = simulate.CHINCHILLA
    if law == "misspecified":
      clean = (p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
               + 0.004 * (np.log(D) - np.log(1e9)) ** 2)
    else:
      clean = p["E"] * (D / 1e9) ** -0.03 + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]
    loss = clean * np.exp(0.01 * np.random.default_rng(seed).standard_normal(clean.shape))
    out.append((f"{law} seed {seed}", [dict(N=float(n), D=float(d), loss=float(l),
                                            heldout=bool(d / n > 40))
                                       for n, d, l in zip(N, D, loss)]))
  return out


def run_modes(name: str, rows: list, settings: dict) -> dict:
  """One case fitted in both modes (in a worker process of its own)."""
  cli.reuse_freed_memory()
  with tempfile.TemporaryDirectory() as tmp:
    return {"case": name, **{mode: run_case(rows, mode, tmp, settings) for mode in MODES}}


def run_case(rows: list, mode: str, workdir: str, settings: dict) -> dict:
  path = os.path.join(workdir, "losses.jsonl")
  io.write_jsonl(path, rows)
  cfg = fit_config.default_config()
  cfg.laws, cfg.discrepancy = "chinchilla", mode
  cfg.num_warmup, cfg.num_samples = settings["num_warmup"], settings["num_samples"]
  cfg.allow_unconverged = True  # counted below, not refused: a benchmark reports every case
  summary = fitting.fit_tables(path, None, os.path.join(workdir, mode), cfg)
  s = summary["extrapolation"]["chinchilla"]
  rows = io.read_json(os.path.join(workdir, mode, "fit", "extrapolation.json"))["rows"]
  width = np.median([(r["hi"] - r["lo"]) / r["observed"] for r in rows])
  return {"median_abs_rel_error": s["median_abs_rel_error"], "coverage": s["interval_coverage"],
          "mean_coverage": s["mean_interval_coverage"], "num_points": s["num_points"],
          "median_rel_width": float(width),
          "converged": summary["converged"],
          "discrepancy": summary["discrepancy"].get("chinchilla")}


def markdown(results: list) -> str:
  lines = ["# Held-out coverage of loss ladders (`benchmarks/heldout_coverage.py`)", "",
           "| case | held-out points | median abs. rel. error | 90% coverage, discrepancy | "
           "its median width / observed | 90% coverage, law exact | its width | ρ, s0, s1 |",
           "|---|---|---|---|---|---|---|---|"]
  for r in results:
    b, n = r["backtest"], r["none"]
    d = b["discrepancy"] or {"s0": {}, "s1": {}}
    lines.append(f"| {r['case']} | {b['num_points']} | {b['median_abs_rel_error']:.2%} | "
                 f"{b['coverage']:.0%} | {b['median_rel_width']:.1%} | {n['coverage']:.0%} | "
                 f"{n['median_rel_width']:.1%} | "
                 f"{d.get('rho', 0):g}, {d['s0'].get('loss', 0):.3f}, {d['s1'].get('loss', 0):.3f} |")
  for source in SOURCES:
    sel = [r for r in results if r["case"].startswith(source)]
    if sel:
      pts = lambda mode: sum(r[mode]["num_points"] for r in sel)
      cov = lambda mode: sum(r[mode]["coverage"] * r[mode]["num_points"] for r in sel) / pts(mode)
      lines.append(f"| **{source}, all** | {pts('backtest')} | "
                   f"{np.median([r['backtest']['median_abs_rel_error'] for r in sel]):.2%} | "
                   f"**{cov('backtest'):.0%}** | "
                   f"{np.median([r['backtest']['median_rel_width'] for r in sel]):.1%} | "
                   f"{cov('none'):.0%} | {np.median([r['none']['median_rel_width'] for r in sel]):.1%} | |")
  return "\n".join(lines) + "\n"


def main(_):
  cli.reuse_freed_memory()
  unknown = set(_CASES.value) - set(SOURCES)
  if unknown:
    raise app.UsageError(f"--cases: unknown {sorted(unknown)}; choose from {', '.join(SOURCES)}")
  cases = (porian_cases() if "porian" in _CASES.value else []) + [
      case for law in ("misspecified", "floor") if law in _CASES.value
      for case in misspecified_cases(_SIMS.value, law)]
  results = []
  start = time.time()
  # One process per case: a single process compiling hundreds of fits and backtests ran out of
  # memory maps in XLA's LLVM JIT ("Cannot allocate memory", then a crash) in the 11th case.
  settings = {"num_warmup": _WARMUP.value, "num_samples": _SAMPLES.value}
  with concurrent.futures.ProcessPoolExecutor(
      _WORKERS.value, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
    entries = [pool.submit(run_modes, name, rows, settings) for name, rows in cases]
    for i, (future, (name, _)) in enumerate(zip(entries, cases)):
      entry = future.result()
      results.append(entry)
      print(f"[{i + 1}/{len(cases)}] {name}: error {entry['backtest']['median_abs_rel_error']:.2%}, "
            f"coverage {entry['backtest']['coverage']:.0%} (law exact: "
            f"{entry['none']['coverage']:.0%}) {time.time() - start:.0f}s", flush=True)
      io.write_json(os.path.join(_OUT.value, "heldout_coverage.json"), results)
      io.write_text(os.path.join(_OUT.value, "heldout_coverage.md"), markdown(results))
  print(markdown(results))


if __name__ == "__main__":
  app.run(main)
