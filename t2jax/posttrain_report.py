"""The posttrain stage's results for the report: `summary` (summary.json's "posttrain") and
`report_section` (the base, FT and SFT optima side by side, and whether the T2 shift survived)."""

import os
from typing import Sequence

import numpy as np

from t2jax import io
from t2jax.posttrain import VARIANTS, variant_dir


def _diagnostics(fit: dict) -> dict:
  return {"converged": fit["converged"], "laws": fit["laws"],
          "diagnostics": {name: {k: d[k] for k in ("rhat_max", "ess_min", "num_divergences",
                                                   "converged", "problems")}
                          for name, d in fit["diagnostics"].items()}}


def _headline(directory: str) -> tuple:
  """(primary law, its inference plan entries, fit summary) of a planned directory, or None."""
  plan_path = os.path.join(directory, "plan", "plan.json")
  fit_path = os.path.join(directory, "fit", "summary.json")
  if not (os.path.exists(plan_path) and os.path.exists(fit_path)):
    return None
  plan = io.read_json(plan_path)
  law = plan["primary"]
  return law, (plan["laws"][law]["inference"] if law else []), io.read_json(fit_path)


def summary(workdir: str) -> dict:
  """{variant: {"law", "plan" (the primary law's inference entries), "fit" (diagnostics),
  "flops_fraction" (post-training / pretraining FLOPs of its rungs)}} for every planned variant."""
  out = {}
  for variant in VARIANTS:
    directory = variant_dir(workdir, variant)
    headline = _headline(directory)
    if headline is None:
      continue
    law, plan, fit = headline
    rows = list(io.read_jsonl(os.path.join(directory, "rungs.jsonl")))
    out[variant] = {"law": law, "plan": plan, "fit": _diagnostics(fit),
                    "flops_fraction": sum(r["posttrain_flops"] for r in rows)
                    / sum(r["train_flops"] for r in rows)}
  return out


def _baseline(entry: dict) -> tuple[str, dict]:
  name = "chinchilla" if "chinchilla" in entry else "training_only"
  return name, entry[name]


def shift(plan: Sequence[dict]) -> tuple[list[bool], float]:
  """(per entry: N* below and D*/N* above the Chinchilla (else training-only) choice, the median
  over entries of baseline N / N*): the T2 shift toward small, overtrained models."""
  shifted, ratios = [], []
  for e in plan:
    _, b = _baseline(e)
    shifted.append(bool(e["N"]["median"] < b["N"]["median"]
                        and e["tokens_per_param"]["median"] > b["tokens_per_param"]["median"]))
    ratios.append(b["N"]["median"] / e["N"]["median"])
  return shifted, float(np.median(ratios)) if ratios else float("nan")


def report_section(workdir: str) -> list[str]:
  """Markdown lines: the base, FT and SFT optima side by side and whether the shift survived
  (empty when no variant has been planned)."""
  from t2jax.report import _iv, _num  # the report's number format; report imports this module
  variants = summary(workdir)
  base = _headline(workdir)
  if not variants or base is None or not base[1]:
    return []
  base_plan = base[1]
  names = {"base": "base", "ft": "FT (whole sequence)", "sft": "SFT (answer only)"}
  plans = {"base": base_plan, **{v: s["plan"] for v, s in variants.items()}}
  baseline_name, _ = _baseline(base_plan[0])
  lines = ["## Post-training: does the shift survive fine-tuning?", "",
           "Every rung fine-tuned on the task train splits (FT: loss on the whole sequence; SFT: "
           "on the answer only), evaluated, fitted and planned like the base ladder; "
           "post-training costs " + ", ".join(f"{v.upper()} {s['flops_fraction']:.2%}"
                                              for v, s in variants.items())
           + " of the pretraining FLOPs. Median [90% interval].", "",
           "| C (FLOPs) | C_inf | model | N* | D*/N* | k* | predicted accuracy | "
           f"{baseline_name} N |",
           "|---|---|---|---|---|---|---|---|"]
  for j, e in enumerate(base_plan):
    for name, plan in plans.items():
      if j >= len(plan):
        continue
      p = plan[j]
      lines.append(f"| {p['C']:.0e} | {p['C_inf']:.0e} | {names[name]} | {_iv(p['N'])} | "
                   f"{_iv(p['tokens_per_param'])} | {_iv(p['k'])} | {_iv(p['accuracy'])} | "
                   f"{_iv(_baseline(p)[1]['N'])} |")
  base_shifted, base_ratio = shift(base_plan)
  if not any(base_shifted):
    return lines + ["", f"The base plan shows no shift (N* below and D*/N* above the "
                    f"{baseline_name} choice at no budget), so there is none to carry over."]
  parts, kept = [], []
  for variant, s in variants.items():
    shifted, ratio = shift(s["plan"])
    kept.append(np.mean([v for b, v in zip(base_shifted, shifted) if b]))
    parts.append(f"{variant.upper()} at {sum(shifted)} of {len(shifted)} (N* {_num(ratio)}× below"
                 + ("; unconverged chains" if not s["fit"]["converged"] else "") + ")")
  verdict = ("survives fine-tuning" if min(kept) == 1 else
             "does not survive fine-tuning" if max(kept) == 0 else "survives only in part")
  lines += ["", f"The shift toward smaller, overtrained models {verdict}: N* is smaller and D*/N* "
            f"larger than the {baseline_name} choice at {sum(base_shifted)} of {len(base_shifted)} "
            f"budgets in the base plan (N* {_num(base_ratio)}× below), " + "; ".join(parts) + "."]
  return lines
