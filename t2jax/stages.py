"""The stages of a run, in order: train → eval → [posttrain] → fit → plan → validate → report. Each
reads and writes files in the workdir only, so any stage can be rerun alone. `posttrain` (FT and
SFT of every rung, evaluated, fitted and planned again) runs only when asked for.

  stages.run(config, workdir, parse_stages("eval,fit"))         # `python -m t2jax.launch`
  stages.run_analysis(("fit", "plan", "report"), out_dir, fit_cfg,
                      results="results.jsonl", rungs=None)       # the fit CLI: given tables
"""

import contextlib
import time
from typing import Optional, Sequence

import jax
import ml_collections

from t2jax import ladder, metrics

STAGES = ("train", "eval", "posttrain", "fit", "plan", "validate", "report")
DEFAULT_STAGES = tuple(s for s in STAGES if s != "posttrain")
ANALYSIS_STAGES = ("fit", "plan", "report")  # they read tables, not checkpoints
SINGLE_PROCESS_STAGES = ANALYSIS_STAGES + ("validate",)  # validate trains on one host's devices


def parse_stages(text: str) -> list[str]:
  """`--stages` ("eval,fit") as a list in run order."""
  stages = [s.strip() for s in text.split(",") if s.strip()]
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    raise ValueError(f"--stages={text!r}: unknown stage(s) {unknown}; choose from {','.join(STAGES)}")
  return sorted(stages, key=STAGES.index)


def run(config: ml_collections.ConfigDict, workdir: str, stages: Sequence[str]) -> None:
  """Runs `stages` of the ladder in `config` on `workdir`; in a multi-process run the
  single-process stages are skipped, with a message saying how to run them."""
  single = [s for s in stages if s in SINGLE_PROCESS_STAGES]
  if single and jax.process_count() > 1:
    # Other processes would wait at jax's shutdown barrier, which times out on a long fit.
    print(f"skipping {', '.join(single)} in this {jax.process_count()}-process run; run "
          f"--stages={','.join(single)} afterwards as a single process", flush=True)
    stages = [s for s in stages if s not in single]
  for stage in stages:
    if stage in ANALYSIS_STAGES:
      run_analysis([stage], workdir, config.fit)
      continue
    if stage == "eval" and "train" in stages:
      continue  # done in the train pass: each rung is evaluated as soon as it is trained
    with _timed("train + eval" if stage == "train" and "eval" in stages else stage):
      if stage == "train":
        if "eval" in stages:
          ladder.run_eval(config, workdir, train=True)
        else:
          ladder.run_train(config, workdir)
      elif stage == "eval":
        ladder.run_eval(config, workdir)
      elif stage == "posttrain":
        posttrain_stage(config, workdir)
      else:
        validate_stage(config, workdir)


def run_analysis(stages: Sequence[str], out_dir: str, fit_cfg: ml_collections.ConfigDict, *,
                 results: Optional[str] = None, rungs: Optional[str] = None) -> None:
  """The fit, plan and report stages among `stages`, on `out_dir`. The fit reads `results` and
  `rungs` where given, else `out_dir`'s results.jsonl and rungs.jsonl (a ladder's workdir)."""
  for stage in stages:
    if stage not in ANALYSIS_STAGES:
      raise ValueError(f"stage {stage!r} is not an analysis stage; use {ANALYSIS_STAGES}")
    with _timed(stage):
      if stage == "fit":
        fit_stage(out_dir, fit_cfg, results=results, rungs=rungs)
      elif stage == "plan":
        plan_stage(out_dir, fit_cfg)
      else:
        report_stage(out_dir)


def fit_stage(out_dir: str, fit_cfg: ml_collections.ConfigDict, *, results: Optional[str] = None,
              rungs: Optional[str] = None):
  """Law fits and posteriors → out_dir/fit/."""
  from t2jax.fit import fitting  # imported here: numpyro loads only when a fit runs
  if results is None:
    return fitting.run_fit(out_dir, fit_cfg)
  return fitting.fit_tables(results, rungs, out_dir, fit_cfg)


def plan_stage(out_dir: str, fit_cfg: ml_collections.ConfigDict):
  """Posterior draws through the planner → out_dir/plan/plan.json."""
  from t2jax.fit import planning  # imported here, as in fit_stage
  return planning.plan_dir(out_dir, fit_cfg)


def posttrain_stage(config: ml_collections.ConfigDict, workdir: str):
  """Every rung fine-tuned (FT, SFT), evaluated, fitted and planned → workdir/posttrain/."""
  from t2jax import posttrain  # imported here, as in fit_stage
  return posttrain.run(config, workdir)


def validate_stage(config: ml_collections.ConfigDict, workdir: str):
  """The plan's choices trained, sampled at their k and measured → workdir/validate/."""
  from t2jax import validate  # imported here, as in fit_stage
  return validate.run_validate(config, workdir)


def report_stage(out_dir: str) -> str:
  """Figures and the summary → out_dir/report/; returns the report's path."""
  from t2jax import report  # imported here: matplotlib loads only for the report
  path = report.write_report(out_dir)
  print(f"report: {path}", flush=True)
  return path


@contextlib.contextmanager
def _timed(stage: str):
  """A stage's banner, and its wall time when it ends."""
  print(f"== {stage} ==", flush=True)
  start = time.time()
  yield
  print(f"== {stage}: done in {metrics.fmt_duration(time.time() - start)} ==", flush=True)
