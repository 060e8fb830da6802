"""The report: figures (PNG + SVG) and report.md / summary.json from the fit and plan outputs.

`write_report(out_dir)` reads `out_dir/fit/summary.json`, `out_dir/fit/extrapolation.json`,
`out_dir/plan/plan.json`, the posteriors and the tables the fit used, and writes
`out_dir/report/{report.md, summary.json, figures/*.png, figures/*.svg}`. report.md opens with the
answer: for each training budget C and inference demand, the N*, D* and k* to use, with 90%
intervals, beside the Chinchilla (training-only) choice.
"""

import dataclasses
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

from t2jax import io, passk  # noqa: E402
from t2jax.fit import inputs as inputs_lib  # noqa: E402
from t2jax.fit import planning  # noqa: E402
from t2jax.laws import chinchilla, table  # noqa: E402

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

def fig_isoflop(plan: dict, law: str, fig_dir: str) -> str:
  p = plan["laws"][law]
  c_infs = plan["inference_budgets"]
  fig, axes = plt.subplots(1, 1 + len(c_infs), figsize=(4.2 * (1 + len(c_infs)), 3.6),
                           squeeze=False, sharey=True)
  for curve in p["isoflop"]:
    N = np.asarray(curve["N"])
    _band(axes[0, 0], N, _as_float(curve["k1"]), f"C={curve['C']:.0e}")
    for i, iv in enumerate(curve["by_inference"]):
      _band(axes[0, 1 + i], N, _as_float(iv), f"C={curve['C']:.0e}")
  axes[0, 0].set_title("training only (k = 1)")
  for i, c_inf in enumerate(c_infs):
    axes[0, 1 + i].set_title(f"with inference: C_inf = {c_inf:.0e}, k = C_inf/(2N)")
  for ax in axes[0]:
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters), D = C/(6N)")
  axes[0, 0].set_ylabel(f"predicted accuracy ({law})")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle("IsoFLOP curves (median, 90% band)")
  return _save(fig, fig_dir, "isoflop")


def fig_frontier(plan: dict, law: str, fig_dir: str) -> str:
  f = plan["laws"][law]["frontier"]
  C = np.asarray(f["C"])
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for key, ax, ylabel in (("N", axes[0], "N* (parameters)"),
                          ("tokens_per_param", axes[1], "D*/N* (tokens per parameter)")):
    t2 = _as_float(f["t2"][key])
    for i, c_inf in enumerate(f["inference_budgets"]):
      _band(ax, C, {k: v[i] for k, v in t2.items()}, f"T2, C_inf={c_inf:.0e}")
    _band(ax, C, _as_float(f["training_only"][key]), "training only (k=1)", color="k", ls=":")
    if "chinchilla" in f:
      _band(ax, C, _as_float(f["chinchilla"][key]), "Chinchilla (val loss)", color="k", ls="--")
    ax.set(xscale="log", yscale="log", xlabel="training budget C (FLOPs)", ylabel=ylabel)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"T2 frontier ({law}; median, 90% band)")
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

def _plan_table(plan: dict, law: str) -> list:
  has_chin = "chinchilla" in plan["laws"][law]["inference"][0]
  head = ("| C (FLOPs) | C_inf = 2Nk | train N* | on D* tokens | D*/N* | sample k* | "
          "predicted accuracy | training-only N (k=1) | its accuracy at C_inf |")
  lines = [head + (" Chinchilla N_opt | its accuracy at C_inf |" if has_chin else ""),
           "|" + "---|" * (9 + 2 * has_chin)]
  for e in plan["laws"][law]["inference"]:
    cells = [f"{e['C']:.0e}", f"{e['C_inf']:.0e}", _iv(e["N"]), _iv(e["D"]),
             _iv(e["tokens_per_param"]), _iv(e["k"]), _iv(e["accuracy"]),
             _iv(e["training_only"]["N"]), _iv(e["training_only"]["accuracy"])]
    if has_chin:
      cells += [_iv(e["chinchilla"]["N"]), _iv(e["chinchilla"]["accuracy"])]
    if e["feasible_fraction"] < 1 or e["at_grid_edge_fraction"] > 0:
      cells[2] += (f" ({e['feasible_fraction']:.0%} feasible, "
                   f"{e['at_grid_edge_fraction']:.0%} at the grid edge)")
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def _lifecycle_table(plan: dict, law: str) -> list:
  lines = ["| C (FLOPs, lifecycle) | queries Q | train N* | on D* tokens | D*/N* | sample k* | "
           "predicted accuracy |", "|---|---|---|---|---|---|---|"]
  for e in plan["laws"][law]["lifecycle"]:
    n = _iv(e["N"])
    if e["feasible_fraction"] < 1 or e["at_grid_edge_fraction"] > 0:
      n += (f" ({e['feasible_fraction']:.0%} feasible, "
            f"{e['at_grid_edge_fraction']:.0%} at the grid edge)")
    lines.append(f"| {e['C']:.0e} | {e['queries']:.0e} | {n} | {_iv(e['D'])} | "
                 f"{_iv(e['tokens_per_param'])} | {_iv(e['k'])} | {_iv(e['accuracy'])} |")
  return lines


def _markdown(fit: dict, plan: dict, figures: dict, extrapolation: dict) -> str:
  law = plan["primary"]
  lines = ["# T2 scaling report", ""]
  if not fit["converged"]:
    bad = [name for name, d in fit["diagnostics"].items() if not d["converged"]]
    lines += [f"**Warning: the NUTS chains of {', '.join(bad)} did not converge (kept with "
              "`allow_unconverged`); their intervals are not trustworthy. See Diagnostics.**", ""]
  if law is not None:
    p = plan["laws"][law]
    lines += [
        f"## What to train: model size N*, tokens D*, samples per query k* ({law})", "",
        "Per training budget C (FLOPs, C = 6ND) and per-token inference budget C_inf = 2·N·k "
        "(k = ⌊C_inf/(2N)⌋ samples per query): the posterior median and [90% interval] over "
        f"{p['num_draws']} posterior draws, each optimised separately. The training-only columns "
        "are the choice that ignores inference (k = 1) and its accuracy when it is sampled with "
        "the same C_inf.", ""] + _plan_table(plan, law)
    lifecycle = p["lifecycle_settings"]
    lines += ["", f"Lifecycle budget (C = 6ND + Q·2N·(T_prompt + k·T_gen), T_prompt = "
              f"{lifecycle['prompt_tokens']:g}, T_gen = {lifecycle['gen_tokens']:g}, the prompt "
              "encoded once per query):", ""] + _lifecycle_table(plan, law)
  if plan.get("chinchilla"):
    lines += ["", "## Chinchilla optimum (validation loss, training only)", "",
              "| C (FLOPs) | N_opt | D_opt | D/N |", "|---|---|---|---|"]
    lines += [f"| {e['C']:.0e} | {_iv(e['N'])} | {_iv(e['D'])} | {_iv(e['tokens_per_param'])} |"
              for e in plan["chinchilla"]]
  lines += ["", "## Figures", ""]
  lines += [f"![{name}]({path})" for name, path in figures.items()]
  lines += ["", "## Extrapolation to held-out rungs", ""]
  if extrapolation["summary"]:
    lines += ["| approach | quantity | points | median abs. rel. error | max abs. rel. error | "
              "90% interval coverage |", "|---|---|---|---|---|---|"]
    lines += [f"| {a} | {s['quantity']} | {s['num_points']} | {s['median_abs_rel_error']:.1%} | "
              f"{s['max_abs_rel_error']:.1%} | {s['interval_coverage']:.0%} |"
              for a, s in extrapolation["summary"].items()]
  else:
    lines.append("No held-out rows.")
  lines += ["", "## Diagnostics", "",
            "| posterior | chains × draws | max r-hat | min ESS | divergences | converged |",
            "|---|---|---|---|---|---|"]
  for name, d in fit["diagnostics"].items():
    lines.append(f"| {name} | {d['num_chains']} × {d['num_draws'] // d['num_chains']} | "
                 f"{d['rhat_max']:.3f} | {d['ess_min']:.0f} | {d['num_divergences']} | "
                 f"{'yes' if d['converged'] else 'NO: ' + '; '.join(d['problems'])} |")
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
  path = os.path.join(out_dir, "report.md")
  io.write_text(path, _markdown(fit, plan, figures, extrapolation))
  headline = plan["laws"][law]["inference"] if law is not None else plan.get("chinchilla", [])
  io.write_json(os.path.join(out_dir, "summary.json"), {
      "law": law, "plan": headline,
      "lifecycle": plan["laws"][law]["lifecycle"] if law is not None else [],
      "chinchilla": plan.get("chinchilla", []), "extrapolation": extrapolation["summary"],
      "diagnostics": {name: {k: d[k] for k in ("rhat_max", "ess_min", "num_divergences",
                                               "converged", "problems")}
                      for name, d in fit["diagnostics"].items()},
      "converged": fit["converged"], "figures": figures})
  return path
