"""`python -m t2jax.fit`: fit, plan and report one results table.

  python -m t2jax.fit --results=results.jsonl [--rungs=rungs.jsonl] --out=DIR \
      [--budget=1e20,1e21] [--inference_budget=1e9,1e11] [--config.num_samples=1000]

writes DIR/fit/, DIR/plan/ and DIR/report/ (report.md, summary.json, figures); see docs/fitting.md.
"""

import functools
from typing import Optional

from absl import app, flags
from ml_collections import config_flags

from t2jax import cli, stages
from t2jax.fit import config as config_lib


def define_flags(flag_values: flags.FlagValues = flags.FLAGS,
                 argv: Optional[list] = None) -> dict:
  """The CLI flags, defined on `flag_values` (only when run as a script, so that importing this
  module defines none); `argv` (default sys.argv) names the --config.FIELD overrides."""
  fv = dict(flag_values=flag_values)
  return {
      "results": flags.DEFINE_string("results", None, "Results table (.jsonl/.csv): per-question "
                                     "rows (N, D, task, question_id, n, c[, nll]) or losses "
                                     "(N, D, loss).", **fv),
      "rungs": flags.DEFINE_string("rungs", None, "Optional rungs table (N, D, val_loss or loss).",
                                   **fv),
      "out": flags.DEFINE_string("out", None, "Output directory: fit/, plan/, report/ go here.",
                                 **fv),
      "budget": flags.DEFINE_list("budget", None, "Training budgets C in FLOPs (overrides "
                                  "config.budgets).", **fv),
      "inference_budget": flags.DEFINE_list("inference_budget", None, "Per-token inference "
                                            "budgets C_inf = 2Nk in FLOPs (overrides "
                                            "config.inference_budgets).", **fv),
      "config": config_flags.DEFINE_config_dict("config", config_lib.default_config(),
                                                "Fit/plan settings.", sys_argv=argv, **fv),
  }


def _float_list(name: str, values) -> tuple:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise ValueError(f"--{name}={','.join(values)}: write FLOPs as numbers, e.g. 1e20,1e21") from None


def main(argv, flags_: dict) -> None:
  cli.no_extra_args(argv)
  if not flags_["results"].value or not flags_["out"].value:
    raise app.UsageError("--results and --out are required")
  cfg = flags_["config"].value
  if flags_["budget"].value:
    cfg.budgets = _float_list("budget", flags_["budget"].value)
  if flags_["inference_budget"].value:
    cfg.inference_budgets = _float_list("inference_budget", flags_["inference_budget"].value)
  config_lib.check_config(cfg)
  cli.start(None, cpu_devices=int(cfg.num_chains))  # NUTS chains in parallel, one CPU device each
  stages.run_analysis(stages.ANALYSIS_STAGES, flags_["out"].value, cfg,
                      results=flags_["results"].value, rungs=flags_["rungs"].value)


if __name__ == "__main__":
  app.run(functools.partial(main, flags_=define_flags()))
