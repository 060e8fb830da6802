"""The report: figures (PNG + SVG) and report.md / summary.json from the fit and plan outputs.

`write_report(out_dir)` reads `out_dir/fit/summary.json`, `out_dir/fit/extrapolation.json`,
`out_dir/plan/plan.json`, the posteriors and the tables the fit used, and writes
`out_dir/report/{report.md, summary.json, figures/*.png, figures/*.svg}`. report.md opens with the
answer: for each training budget C and inference demand, the N*, D* and k* to use, with 90%
intervals, beside the Chinchilla (training-only) choice.
"""

import dataclasses
import os
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from t2jax import io, passk, posttrain_report, uncertainty_report, validate  # noqa: E402
from t2jax.fit import inputs as inputs_lib  # noqa: E402
from t2jax.fit import planning  # noqa: E402
from t2jax.laws import chinchilla, discrepancy, table  # noqa: E402

FIGURES = ("isoflop", "frontier", "posterior_pairs", "passk_vs_k", "loss_vs_compute",
           "extrapolation")
_PAIR_PARAMS = {"chinchilla": ("E", "A", "B", "alpha", "beta"),
                "approach1": ("E", "A", "B", "G", "alpha", "beta", "gamma"),
                "approach2": ("E", "alpha", "beta", "theta1", "theta2", "theta3")}


def _num(x) -> str:
  if x is None or not np.isfinite(x):
    return "–"
  return f"{x:.3g}" if 1e-2 <= abs(x) < 1e4 else f"{x:.2e}"


def _iv(d: dict) -> str:
  """"median [lo, hi]" of an interval dict."""
  return f"{_num(d['median'])} [{_num(d['lo'])}, {_num(d['hi'])}]"


def _save(fig, fig_dir: str, name: str) -> str:
  for ext in ("png", "svg"):
    with io.atomic_open(os.path.join(fig_dir, f"{name}.{ext}"), "wb") as f:
      fig.savefig(f, format=ext, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return f"figures/{name}.png"


def _band(ax, x, iv: dict, label: str, **kw):
  (line,) = ax.plot(x, iv["median"], label=label, **kw)
  ax.fill_between(x, np.asarray(iv["lo"], float), np.asarray(iv["hi"], float),
                  color=line.get_color(), alpha=0.2, lw=0)


def _as_float(iv: dict) -> dict:
  return {k: np.array(v, dtype=float) for k, v in iv.items()}


# ------------------------------------------------------------------------------- figures

_FITTED = dict(color="0.85", lw=0, zorder=0)  # the fitted rows' range, shaded
_BOUND = dict(color="0.5", ls="--", lw=0.8)  # the planner's N bounds


def _n_region(ax, plan: dict, axis: str) -> None:
  """Shades the fitted model sizes and draws the planner's N bounds along `axis` ("x" or "y")."""
  r, b = plan["fitted_range"], plan["n_bounds"]
  (ax.axvspan if axis == "x" else ax.axhspan)(r["N_min"], r["N_max"], label="fitted N", **_FITTED)
  if b["bounded"]:
    for n in (b["N_min"], b["N_max"]):
      (ax.axvline if axis == "x" else ax.axhline)(n, **_BOUND)


def fig_isoflop(plan: dict, law: str, fig_dir: str) -> str:
  """Accuracy vs N at each C: k = 1, then one panel per C_inf with the T2 optimum marked."""
  p = plan["laws"][law]
  c_infs = plan["inference_budgets"]
  fig, axes = plt.subplots(1, 1 + len(c_infs), figsize=(4 * (1 + len(c_infs)), 3.8), squeeze=False,
                           sharey=True, layout="constrained")
  colors = {curve["C"]: f"C{j}" for j, curve in enumerate(p["isoflop"])}
  for curve in p["isoflop"]:
    N, color = np.asarray(curve["N"]), colors[curve["C"]]
    _band(axes[0, 0], N, _as_float(curve["k1"]), f"C = {curve['C']:.0e}", color=color)
    for i, iv in enumerate(curve["by_inference"]):
      _band(axes[0, 1 + i], N, _as_float(iv), f"C = {curve['C']:.0e}", color=color)
  for e in p["inference"]:
    ax = axes[0, 1 + c_infs.index(e["C_inf"])]
    ax.plot(e["N"]["median"], e["accuracy"]["median"], "o", color=colors[e["C"]], mec="k", ms=6)
  axes[0, 0].set_title("k = 1, no inference cost", fontsize=10)
  for i, c_inf in enumerate(c_infs):
    axes[0, 1 + i].set_title(f"C_inf = {c_inf:.0e}, k = ⌊C_inf/2N⌋", fontsize=10)
  for ax in axes[0]:
    _n_region(ax, plan, "x")
    ax.set(xscale="log", xlabel="N (parameters), D = C/(6N)")
  axes[0, 0].set_ylabel(f"predicted accuracy ({law})")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle("IsoFLOP curves (median, 90% band; dots: T2 optimum; grey: fitted N; dashed: "
               "N search bounds)", fontsize=10)
  return _save(fig, fig_dir, "isoflop")


def fig_frontier(plan: dict, law: str, fig_dir: str) -> str:
  """N* and D*/N* vs C: one column per C_inf, T2 (band) against training-only and Chinchilla."""
  f = plan["laws"][law]["frontier"]
  r = plan["fitted_range"]
  C = np.asarray(f["C"])
  c_infs = f["inference_budgets"]
  fig, axes = plt.subplots(2, len(c_infs), figsize=(4 * len(c_infs), 6.4), squeeze=False,
                           sharex=True, sharey="row", layout="constrained")
  rows = (("N", "N* (parameters)"), ("tokens_per_param", "D*/N* (tokens per parameter)"))
  for row, (key, ylabel) in enumerate(rows):
    t2 = _as_float(f["t2"][key])
    for i, c_inf in enumerate(c_infs):
      ax = axes[row, i]
      if key == "N":
        _n_region(ax, plan, "y")
      else:
        ax.axhspan(r["tokens_per_param_min"], r["tokens_per_param_max"], label="fitted D/N",
                   **_FITTED)
      ax.axvline(r["compute_max"], color="0.3", ls=":", lw=1, label="largest fitted 6ND")
      _band(ax, C, {k: v[i] for k, v in t2.items()}, "T2 (with inference)", color="C0", lw=2)
      ax.plot(C, _as_float(f["training_only"][key])["median"], color="C1", lw=1.5,
              label="training only (k = 1)")
      if "chinchilla" in f:
        ax.plot(C, _as_float(f["chinchilla"][key])["median"], color="k", ls="--", lw=1.5,
                label="Chinchilla (val loss)")
      ax.set(xscale="log", yscale="log")
      if row == 0:
        ax.set_title(f"C_inf = {c_inf:.0e}", fontsize=10)
      else:
        ax.set_xlabel("training budget C (FLOPs)")
    axes[row, 0].set_ylabel(ylabel)
  axes[0, 0].legend(fontsize=7)
  axes[1, 0].legend(fontsize=7)
  fig.suptitle(f"T2 frontier ({law}; median, 90% band for T2)", fontsize=11)
  return _save(fig, fig_dir, "frontier")


def fig_pairs(posts: dict, fig_dir: str) -> str:
  """Pairwise scatter of the main parameters of each law (first task)."""
  panels = []
  for name, post in sorted(posts.items()):
    law = name.split("/")[0]
    cols = {k: np.asarray(post.draws[k]) for k in _PAIR_PARAMS[law] if k in post.draws}
    cols = {k: (v[:, 0] if v.ndim > 1 else v) for k, v in cols.items()}
    label = name if law != "approach2" else f"approach2/{post.meta['tasks'][0]}"
    panels.append((label, cols))
  size = max(len(c) for _, c in panels)
  fig, axes = plt.subplots(len(panels), size - 1, figsize=(2.3 * (size - 1), 2.3 * len(panels)),
                           squeeze=False)
  for r, (label, cols) in enumerate(panels):
    names = list(cols)
    for j in range(size - 1):
      ax = axes[r, j]
      if j + 1 >= len(names):
        ax.axis("off")
        continue
      ax.scatter(cols[names[j + 1]], cols[names[0]] if j == 0 else cols[names[j]], s=2, alpha=0.4)
      ax.set_xlabel(names[j + 1], fontsize=8)
      ax.set_ylabel(names[0] if j == 0 else names[j], fontsize=8)
      ax.tick_params(labelsize=6)
    axes[r, 0].set_title(label, fontsize=9, loc="left")
  fig.suptitle("Posterior draws: neighbouring parameter pairs")
  fig.tight_layout()
  return _save(fig, fig_dir, "posterior_pairs")


def fig_passk(results: table.ResultsTable, fig_dir: str) -> str:
  """Observed mean pass@k vs k per task, one line per model (unbiased estimator)."""
  tasks = results.tasks
  fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
  models = sorted(set(results.model_id.tolist()),
                  key=lambda m: (results.N[results.model_id == m][0], results.D[results.model_id == m][0]))
  cmap = plt.get_cmap("viridis")
  for ax, task in zip(axes[0], tasks):
    rows = results.select(results.task == task)
    n_min = int(rows.n[rows.sampled].min()) if rows.sampled.any() else 64
    ks = 2 ** np.arange(int(np.log2(max(n_min, 1))) + 1)
    for i, model in enumerate(models):
      mask = rows.model_id == model
      if mask.any():
        acc = [passk.observed_passk(rows.n[mask], rows.c[mask], rows.nll[mask], int(k)) for k in ks]
        ax.plot(ks, acc, marker="o", ms=3, color=cmap(i / max(len(models) - 1, 1)),
                label=model)
    ax.set(xscale="log", xlabel="k", ylabel="mean pass@k", title=task, ylim=(0, 1))
  axes[0, -1].legend(fontsize=6, ncol=2)
  fig.suptitle("pass@k vs k per model (observed)")
  return _save(fig, fig_dir, "passk_vs_k")


def fig_loss(losses: table.LossTable, post, fig_dir: str) -> str:
  """Loss vs training compute 6ND per rung, with fitted Chinchilla curves per model size."""
  fig, ax = plt.subplots(figsize=(6, 4))
  sizes = np.unique(losses.N)
  cmap = plt.get_cmap("viridis")
  median = {k: float(np.median(v)) for k, v in post.draws.items()} if post is not None else None
  for i, N in enumerate(sizes):
    color = cmap(i / max(len(sizes) - 1, 1))
    sel = losses.N == N
    C = 6 * N * losses.D[sel]
    held = losses.heldout[sel]
    ax.scatter(C[~held], losses.loss[sel][~held], color=color, s=18, label=f"N={N:.3g}")
    ax.scatter(C[held], losses.loss[sel][held], facecolors="none", edgecolors=color, s=18)
    if median is not None:
      C_line = np.geomspace(C.min() / 2, C.max() * 2, 50)
      ax.plot(C_line, np.asarray(chinchilla.loss(median, N, C_line / (6 * N))), color=color, lw=1)
  ax.set(xscale="log", yscale="log", xlabel="training compute 6ND (FLOPs)", ylabel="loss",
         title="loss per rung (hollow: held out) and the fitted Chinchilla law")
  ax.legend(fontsize=6, ncol=2)
  return _save(fig, fig_dir, "loss_vs_compute")


def fig_extrapolation(extrapolation: dict, fig_dir: str) -> str:
  rows = extrapolation["rows"]
  approaches = [a for a in ("chinchilla", "approach1", "approach2")
                if any(r["approach"] == a for r in rows)]
  fig, axes = plt.subplots(2, len(approaches), figsize=(4 * len(approaches), 7), squeeze=False)
  for j, a in enumerate(approaches):
    sel = [r for r in rows if r["approach"] == a]
    obs = np.array([r["observed"] for r in sel])
    pred = np.array([r["predicted"] for r in sel])
    err = np.array([[r["predicted"] - r["lo"] for r in sel], [r["hi"] - r["predicted"] for r in sel]])
    ax = axes[0, j]
    ax.errorbar(obs, pred, yerr=np.maximum(err, 0), fmt="o", ms=3, alpha=0.7)
    lim = [min(obs.min(), pred.min()), max(obs.max(), pred.max())]
    ax.plot(lim, lim, "k--", lw=1)
    ax.set(xlabel=f"observed {sel[0]['quantity']}", ylabel="predicted (90% interval)", title=a)
    tpp = np.array([r["D"] / r["N"] for r in sel])
    axes[1, j].scatter(tpp, [r["rel_error"] for r in sel], s=8)
    axes[1, j].axhline(0, color="k", lw=1)
    axes[1, j].set(xscale="log", xlabel="tokens per parameter (held-out rungs)",
                   ylabel="relative error (pred/obs − 1)")
  fig.suptitle("Extrapolation to held-out (overtrained) rungs")
  fig.tight_layout()
  return _save(fig, fig_dir, "extrapolation")


# -------------------------------------------------------------------------------- markdown

def _pct(x) -> str:
  return "n/a" if x is None else f"{x:.0%}"


def _beyond(x: dict) -> bool:
  """Whether an extrapolation dict lies beyond the fitted range."""
  return any(v is not None and v > 1 for v in x.values())


def _factors(x: dict, scale: Optional[dict] = None) -> str:
  """"D/N ×f, C ×g" of an extrapolation dict, with its distance d (`discrepancy.scaled`, in the
  law's fitted spans where `scale`, its discrepancy, is given) and † beyond the fitted range."""
  f, g = x["tokens_per_param_factor"], x["compute_factor"]
  finite = all(v is not None and np.isfinite(v) and v > 0 for v in (f, g))
  s = scale or {}
  d = (discrepancy.scaled(max(np.log(f), 0.0), max(np.log(g), 0.0), s.get("tpp_span", 1.0),
                          s.get("compute_span", 1.0), s.get("rho", 0.0))
       if finite else float("nan"))
  return (f"D/N ×{_num(f)}, C ×{_num(g)}" + (f", d = {d:.2f} †" if _beyond(x) else ""))


def _flags(e: dict) -> str:
  """" (… feasible, … at the grid edge, … at the N bound)" where any applies."""
  parts = [f"{e['feasible_fraction']:.0%} feasible"] if e["feasible_fraction"] < 1 else []
  parts += [f"{e[key]:.0%} {what}" for key, what in (("at_grid_edge_fraction", "at the grid edge"),
                                                   ("at_n_bound_fraction", "at the N bound"))
            if e[key] > 0]
  return f" ({', '.join(parts)})" if parts else ""


def _baseline(b: dict) -> str:
  return _iv(b["N"]) + (" †" if _beyond(b["extrapolation"]) else "")


def _plan_table(plan: dict, law: str) -> list:
  has_chin = "chinchilla" in plan["laws"][law]["inference"][0]
  head = ("| C (FLOPs) | C_inf = 2Nk | train N* | on D* tokens | D*/N* | sample k* | "
          "predicted accuracy | beyond the fit | training-only N (k=1) | its accuracy at C_inf |")
  lines = [head + (" Chinchilla N_opt | its accuracy at C_inf |" if has_chin else ""),
           "|" + "---|" * (10 + 2 * has_chin)]
  for e in plan["laws"][law]["inference"]:
    cells = [f"{e['C']:.0e}", f"{e['C_inf']:.0e}", _iv(e["N"]) + _flags(e), _iv(e["D"]),
             _iv(e["tokens_per_param"]), _iv(e["k"]), _iv(e["accuracy"]),
             _factors(e["extrapolation"], plan.get("discrepancy", {}).get(law)),
             _baseline(e["training_only"]),
             _iv(e["training_only"]["accuracy"])]
    if has_chin:
      cells += [_baseline(e["chinchilla"]), _iv(e["chinchilla"]["accuracy"])]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _per_task_table(plan: dict, law: str) -> list:
  """Each task's own optimum per (C, C_inf); † where its D*/N* is beyond the fitted D/N."""
  tpp_max = plan["fitted_range"]["tokens_per_param_max"]
  lines = ["| C (FLOPs) | C_inf | task | train N* | D*/N* | sample k* | predicted accuracy |",
           "|---|---|---|---|---|---|---|"]
  for e in plan["laws"][law]["inference"]:
    for task, t in e["per_task"].items():
      tpp = t["tokens_per_param"]
      mark = " †" if tpp["median"] is not None and tpp["median"] > tpp_max else ""
      lines.append(f"| {e['C']:.0e} | {e['C_inf']:.0e} | {task} | {_iv(t['N'])}{_flags(t)} | "
                   f"{_iv(tpp)}{mark} | {_iv(t['k'])} | {_iv(t['accuracy'])} |")
  return lines


def _lifecycle_table(plan: dict, law: str) -> list:
  lines = ["| C (FLOPs, lifecycle) | queries Q | train N* | on D* tokens | D*/N* | sample k* | "
           "predicted accuracy | beyond the fit |", "|---|---|---|---|---|---|---|---|"]
  for e in plan["laws"][law]["lifecycle"]:
    lines.append(f"| {e['C']:.0e} | {e['queries']:.0e} | {_iv(e['N'])}{_flags(e)} | {_iv(e['D'])} | "
                 f"{_iv(e['tokens_per_param'])} | {_iv(e['k'])} | {_iv(e['accuracy'])} | "
                 f"{_factors(e['extrapolation'], plan.get('discrepancy', {}).get(law))} |")
  return lines


def _range_notes(plan: dict) -> list:
  """The N search range and the † footnote."""
  r, b = plan["fitted_range"], plan["n_bounds"]
  fitted = f"{_num(r['N_min'])} … {_num(r['N_max'])}"
  if b["bounded"]:
    where = (f"N* is searched within [{_num(b['N_min'])}, {_num(b['N_max'])}], the fitted model "
             f"sizes ({fitted}) ×/÷ {b['n_range_factor']:g} (`n_range_factor`); \"at the N bound\" "
             "marks draws whose optimum sits on that bound (the law would pick a size further out).")
  else:
    where = f"N* is searched without bounds (`bound_n=False`); the fitted sizes are {fitted}."
  return [where + " † beyond the fitted range: \"beyond the fit\" gives the median D*/N* over the "
          f"largest fitted D/N ({_num(r['tokens_per_param_max'])}) and the training compute 6N*D* "
          f"over the largest fitted 6ND ({_num(r['compute_max'])}); > 1 is extrapolation (overtraining "
          "beyond the fitted D/N is T2's point: see the held-out extrapolation below for how far "
          "the law holds); d is the distance the model discrepancy grows with (see its section)."]


def _markdown(fit: dict, plan: dict, figures: dict, extrapolation: dict,
              validation_md: list[str], posttrain_md: list[str] = (),
              discrepancy_md: list[str] = ()) -> str:
  law = plan["primary"]
  lines = ["# T2 scaling report", ""]
  if not fit["converged"]:
    bad = [name for name, d in fit["diagnostics"].items() if not d["converged"]]
    lines += [f"**Warning: the NUTS chains of {', '.join(bad)} did not converge (kept with "
              "`allow_unconverged`); their intervals are not trustworthy. See Diagnostics.**", ""]
  if law is not None and not plan["n_bounds"]["bounded"]:
    r = plan["fitted_range"]
    lines += [f"**Warning: N* was searched without bounds (`bound_n=False`); plans outside the "
              f"fitted model sizes ({_num(r['N_min'])} … {_num(r['N_max'])}) extrapolate the law in "
              "N. Set `bound_n=True` to keep N* near the data.**", ""]
  lines += validation_md + ([""] if validation_md else [])
  if law is not None:
    p = plan["laws"][law]
    lines += [
        f"## What to train: model size N*, tokens D*, samples per query k* ({law})", "",
        "Per training budget C (FLOPs, C = 6ND) and per-token inference budget C_inf = 2·N·k "
        "(k = ⌊C_inf/(2N)⌋ samples per query): the posterior median and [90% interval] over "
        f"{p['num_draws']} posterior draws, each optimised separately. The training-only columns "
        "are the choice that ignores inference (k = 1) and its accuracy when it is sampled with "
        "the same C_inf.", ""] + _plan_table(plan, law) + [""] + _range_notes(plan)
    lines += ["", "Per task: each task's own optimum (the table above maximises the mean over tasks "
              f"{', '.join(p['tasks'])}):", ""] + _per_task_table(plan, law)
    lifecycle = p["lifecycle_settings"]
    lines += ["", f"Lifecycle budget (C = 6ND + Q·2N·(T_prompt + k·T_gen), T_prompt = "
              f"{lifecycle['prompt_tokens']:g}, T_gen = {lifecycle['gen_tokens']:g}, the prompt "
              "encoded once per query):", ""] + _lifecycle_table(plan, law)
  if plan.get("chinchilla"):
    lines += ["", "## Chinchilla optimum (validation loss, training only)", "",
              "| C (FLOPs) | N_opt | D_opt | D/N | beyond the fit |", "|---|---|---|---|---|"]
    lines += [f"| {e['C']:.0e} | {_iv(e['N'])} | {_iv(e['D'])} | {_iv(e['tokens_per_param'])} | "
              f"{_factors(e['extrapolation'], plan.get('discrepancy', {}).get('chinchilla'))} |"
              for e in plan["chinchilla"]]
  if posttrain_md:
    lines += [""] + list(posttrain_md)
  lines += ["", "## Figures", ""]
  lines += [f"![{name}]({path})" for name, path in figures.items()]
  lines += [""] + list(discrepancy_md)
  lines += ["## Extrapolation to held-out rungs", "",
            "Coverage of the posterior predictive 90% intervals (model discrepancy and observation "
            "noise included), beside that of the mean function alone (the law taken as exact).", ""]
  if extrapolation["summary"]:
    lines += ["| approach | quantity | points | median abs. rel. error | max abs. rel. error | "
              "90% predictive coverage | mean-function coverage |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {a} | {s['quantity']} | {s['num_points']} | {s['median_abs_rel_error']:.1%} | "
              f"{s['max_abs_rel_error']:.1%} | {s['interval_coverage']:.0%} | "
              f"{_pct(s.get('mean_interval_coverage'))} |"
              for a, s in extrapolation["summary"].items()]
  else:
    lines.append("No held-out rows.")
  lines += [""] + uncertainty_report.diagnostics_markdown(fit)
  for law_name, why in fit["skipped"].items():
    lines.append(f"\n{law_name} not fitted: {why}.")
  inputs = fit["inputs"]
  lines += ["", f"Inputs: results `{inputs['results']}`, rungs `{inputs['rungs']}`."]
  if "models_heldout" in inputs:
    lines.append(f"Held-out models: {', '.join(inputs['models_heldout']) or 'none'}.")
  return "\n".join(lines) + "\n"


def write_report(workdir: str) -> str:
  """Figures, report.md and summary.json under `workdir/report/`; returns report.md's path (the
  fit and plan outputs carry every setting the report shows)."""
  paths = {name: os.path.join(workdir, *parts) for name, parts in (
      ("fit", ("fit", "summary.json")), ("extrapolation", ("fit", "extrapolation.json")),
      ("plan", ("plan", "plan.json")))}
  for name, path in paths.items():
    if not os.path.exists(path):
      raise ValueError(f"{path} does not exist; run the {'plan' if name == 'plan' else 'fit'} "
                       "stage first")
  fit, posts = planning.load_posteriors(workdir)
  extrapolation = io.read_json(paths["extrapolation"])
  plan = io.read_json(paths["plan"])
  out_dir = os.path.join(workdir, "report")
  fig_dir = os.path.join(out_dir, "figures")
  figures = {}
  law = plan["primary"]
  if law is not None:
    figures["isoflop"] = fig_isoflop(plan, law, fig_dir)
    figures["frontier"] = fig_frontier(plan, law, fig_dir)
  figures["posterior_pairs"] = fig_pairs(posts, fig_dir)
  figures.update(uncertainty_report.trace_figures(posts, fig_dir))
  inputs = fit["inputs"]
  if "tasks" in inputs:
    figures["passk_vs_k"] = fig_passk(table.load_results(inputs["results"]), fig_dir)
  loss_path = inputs["rungs"] or (None if "tasks" in inputs else inputs["results"])
  if loss_path:
    losses = table.load_losses(loss_path)
    if "heldout" not in table.read_rows(loss_path)[0]:
      limit = fit["config"]["fit_max_tokens_per_param"]
      losses = dataclasses.replace(losses, heldout=inputs_lib.heldout_mask(losses.N, losses.D, limit))
    figures["loss_vs_compute"] = fig_loss(losses, posts.get("chinchilla"), fig_dir)
  if extrapolation["rows"]:
    figures["extrapolation"] = fig_extrapolation(extrapolation, fig_dir)
  backtests = uncertainty_report.load(workdir)
  if backtests and any(b["points"] for b in backtests.values()):
    figures["backtest"] = uncertainty_report.figure(backtests, fig_dir)
  path = os.path.join(out_dir, "report.md")
  validation, validation_md = validate.report_section(workdir)
  io.write_text(path, _markdown(fit, plan, figures, extrapolation, validation_md,
                                posttrain_report.report_section(workdir),
                                uncertainty_report.markdown(backtests)))
  headline = plan["laws"][law]["inference"] if law is not None else plan.get("chinchilla", [])
  io.write_json(os.path.join(out_dir, "summary.json"), {
      "law": law, "plan": headline,
      "lifecycle": plan["laws"][law]["lifecycle"] if law is not None else [],
      "chinchilla": plan.get("chinchilla", []), "extrapolation": extrapolation["summary"],
      "diagnostics": {name: {k: d[k] for k in ("rhat_max", "ess_min", "num_divergences",
                                               "converged", "problems")}
                      for name, d in fit["diagnostics"].items()},
      "converged": fit["converged"], "validation": validation,
      "discrepancy": uncertainty_report.summary(backtests) if backtests else None,
      "posttrain": posttrain_report.summary(workdir) or None, "figures": figures})
  return path
