"""The report's uncertainty sections: the model discrepancy (backtests inside the fitting set and
the scale they give each law, `fit/backtest.json`, written with `discrepancy="backtest"`), and the
Bayesian diagnostics (convergence, PSIS-LOO and the likelihood it chose, trace and rank plots)."""

import os
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from t2jax import io  # noqa: E402
from t2jax.fit import backtest  # noqa: E402
from t2jax.laws import diagnostics, discrepancy  # noqa: E402

_Z90 = 1.6449


def load(workdir: str) -> Optional[dict]:
  """fit/backtest.json, or None when the fit ran without backtests."""
  path = os.path.join(workdir, "fit", "backtest.json")
  return io.read_json(path) if os.path.exists(path) else None


def summary(backtests: dict) -> dict:
  """Per law: the discrepancy scale, the folds and points behind it, and the backtest's own
  coverage of its 90% intervals (noise, the fold fit's parameter sd and the fitted discrepancy,
  in sample)."""
  out = {}
  for law, b in backtests.items():
    s = b["scale"]
    for task in s["s0"]:
      pts = [p for p in b["points"] if p.get("task", "loss") == task]
      e = np.array([p["error"] for p in pts])
      s0, s1 = discrepancy.task_scale(s, task)
      sd = np.array([np.hypot(backtest.known_sd(p), s0 + s1 * p["distance"]) for p in pts])
      out[f"{law}/{task}" if task != "loss" else law] = {
          "s0": s0, "s1": s1, "rho": float(s.get("rho", 0.0)), "scale": discrepancy.SCALES[law],
          "num_folds": len(b["folds"]),
          "num_points": len(pts), "skipped": b["skipped"],
          "median_abs_error": float(np.median(np.abs(e))) if pts else None,
          "coverage_in_sample": float(np.mean(np.abs(e) <= _Z90 * sd)) if pts else None}
  return out


def figure(backtests: dict, fig_dir: str) -> str:
  """Per law: backtest predicted vs observed (top) and error vs distance with the fitted 90% band
  of noise, the median fold parameter sd and the discrepancy (bottom)."""
  laws = [law for law in backtests if backtests[law]["points"]]
  fig, axes = plt.subplots(2, max(len(laws), 1), figsize=(4 * max(len(laws), 1), 7), squeeze=False)
  for j, law in enumerate(laws):
    pts, s = backtests[law]["points"], backtests[law]["scale"]
    obs = np.array([p["observed"] for p in pts])
    pred = np.array([p["predicted"] for p in pts])
    dist = np.array([p["distance"] for p in pts])
    ax = axes[0, j]
    sc = ax.scatter(obs, pred, c=dist, s=8, cmap="viridis")
    lim = [min(obs.min(), pred.min()), max(obs.max(), pred.max())]
    ax.plot(lim, lim, "k--", lw=1)
    log = discrepancy.SCALES[law] == "log"
    ax.set(xlabel="observed", ylabel="backtest prediction", title=law,
           xscale="log" if log else "linear", yscale="log" if log else "linear")
    fig.colorbar(sc, ax=ax, label="distance")
    ax = axes[1, j]
    ax.scatter(dist, [p["error"] for p in pts], s=8, alpha=0.6)
    d = np.linspace(0, max(dist.max(), 0.1), 50)
    noise = np.median([backtest.known_sd(p) for p in pts])
    for task in s["s0"]:
      s0, s1 = discrepancy.task_scale(s, task)
      band = _Z90 * np.hypot(noise, s0 + s1 * d)
      ax.plot(d, band, lw=1, label=f"90% band, {task}")
      ax.plot(d, -band, lw=1, color=ax.lines[-1].get_color())
    ax.axhline(0, color="k", lw=1)
    ax.set(xlabel="distance beyond the fold's fitted rows", ylabel=f"error ({discrepancy.SCALES[law]})")
    ax.legend(fontsize=7)
  fig.suptitle("Backtests inside the fitting set")
  fig.tight_layout()
  os.makedirs(fig_dir, exist_ok=True)
  path = os.path.join(fig_dir, "backtest.png")
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)
  return os.path.join("figures", "backtest.png")


def markdown(backtests: Optional[dict]) -> list[str]:
  """The section: what the intervals include, and each law's backtest and discrepancy scale."""
  lines = ["## Model discrepancy (backtests inside the fitting set)", ""]
  if backtests is None:
    return lines + ["The fit ran without backtests (`discrepancy='none'`): every interval in this "
                    "report treats the fitted law as exact, with its fitted noise only.", ""]
  lines += ["Each law was refitted on part of its fitted rows (rolling origin in D/N and in "
            "compute, and leaving one model size out) and predicted the rest. From those errors, "
            "the sd of the law's error beyond noise and beyond the refit's own parameter "
            "uncertainty (its Laplace sd at each predicted row; the final posterior carries its "
            "own) is σ(d) = s0 + s1·d at distance "
            "d = max(0, log D/N factor)/span_D/N^ρ + max(0, log compute factor)/span_C^ρ beyond "
            "the fitted rows (span: the log-span of the fitted range, at least log 2; ρ fitted "
            "per law in {0, ¼, …, 1}: ρ = 1 measures the horizon in fitted spans). "
            "Every posterior draw carries one such error (a draw of σ(d)·z), so the plan's "
            "intervals and the held-out predictive intervals widen with d.", "",
            "| law / task | scale | folds | points | median abs. error | ρ | s0 | s1 | in-sample 90% coverage |",
            "|---|---|---|---|---|---|---|---|---|"]
  skipped = []  # listed below the table: a line inside it would end it
  for law, s in summary(backtests).items():
    med = "n/a" if s["median_abs_error"] is None else f"{s['median_abs_error']:.3f}"
    cov = "n/a" if s["coverage_in_sample"] is None else f"{s['coverage_in_sample']:.0%}"
    lines.append(f"| {law} | {s['scale']} | {s['num_folds']} | {s['num_points']} | {med} | "
                 f"{s['rho']:g} | {s['s0']:.3f} | {s['s1']:.3f} | {cov} |")
    skipped += [f"- {law}: fold `{label}` skipped ({why})." for label, why in s["skipped"].items()]
  if skipped:
    lines += [""] + skipped
  if not any(b["points"] for b in backtests.values()):
    lines += ["", "No fold had enough models (6 or more of 2+ sizes) to refit: the discrepancy "
              "is 0 and the intervals treat the laws as exact within the fitted range."]
  return lines + [""]


def trace_figures(posts: dict, fig_dir: str) -> dict:
  """{"trace NAME": path} per posterior: trace and rank plots of its sampled sites."""
  out = {}
  for name, post in posts.items():
    file = f"trace_{name.replace('/', '__')}.png"
    diagnostics.trace_rank_figure(post, os.path.join(fig_dir, file))
    out[f"trace {name}"] = os.path.join("figures", file)
  return out


def diagnostics_markdown(fit: dict) -> list[str]:
  """Convergence per posterior, and PSIS-LOO per law under each likelihood fitted."""
  lines = ["## Diagnostics", "",
           "| posterior | chains × draws | max r-hat | min ESS | divergences | converged |",
           "|---|---|---|---|---|---|"]
  for name, d in fit["diagnostics"].items():
    lines.append(f"| {name} | {d['num_chains']} × {d['num_draws'] // d['num_chains']} | "
                 f"{d['rhat_max']:.3f} | {d['ess_min']:.0f} | {d['num_divergences']} | "
                 f"{'yes' if d['converged'] else 'NO: ' + '; '.join(d['problems'])} |")
  loo = fit.get("loo") or {}
  if loo:
    lines += ["", "PSIS-LOO of the fitted rows per law and loss likelihood (elpd: higher is better; "
              "Pareto k above ~0.7 marks rows whose estimate is unreliable). The likelihood kept "
              "is marked; under `likelihood=auto` the Student-t must beat the Normal by more than 2 "
              "standard errors, or at all where the Normal leaves more rows with high k.", "",
              "| law | likelihood | elpd_loo ± se | p_loo | max Pareto k | rows with high k | kept |",
              "|---|---|---|---|---|---|---|"]
    for law, entry in loo.items():
      chosen = entry["chosen"]
      for lik in ("normal", "student_t"):
        if lik in entry:
          e = entry[lik]
          lines.append(f"| {law} | {lik} | {e['elpd_loo']:.1f} ± {e['se']:.1f} | {e['p_loo']:.1f} "
                       f"| {e['pareto_k_max']:.2f} | {e['num_bad_k']} | "
                       f"{'yes: ' + chosen['reason'] if lik == chosen['likelihood'] else ''} |")
  return lines
