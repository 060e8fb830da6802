"""The validate stage: train the models the laws recommend, sample each at its k, and compare the
measured pass@k with the prediction (the T2 paper's central experiment, at the run's scale).

For every (C, C_inf) in `validate.budgets` and every choice in `validate.choices`:
  t2             the planner's posterior-median N* at (C, C_inf)
  chinchilla     the Chinchilla law's posterior-median N_opt at C (needs a losses table in the fit)
  training_only  the posterior-median k = 1 accuracy-optimal N at C (the same law as t2)
are planned from the fit posteriors with the plan stage's functions and draws (so for a budget in
fit.budgets × fit.inference_budgets they are plan/plan.json's medians; other budgets are planned
on the fly). Each N is rounded to the nearest size of the ladder's family (`sizes.nearest_size`),
trained with the rung recipe on D = C/(6N) (rounded to whole steps), and sampled
k = floor(C_inf/(2N)) times per question on the law's tasks. Choices that round to the same size
share one run; every check runs before the first step trains.

  workdir/validate/runs/<size>@C<C>/   ckpt/, metrics.jsonl, train_done.json, eval_k<k>.jsonl
  workdir/validate/validation.json     one entry per (C, C_inf, choice): predicted vs measured

`report_section(workdir)` gives the report its summary entries and markdown.
"""

import dataclasses
import json
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from t2jax import evaluate, io, passk, sizes, tasks, train
from t2jax.fit import config as fit_config
from t2jax.laws import targets
from t2jax.tasks.base import SPLITS
from t2jax.tokenizer import load_tokenizer

CHOICES = ("t2", "chinchilla", "training_only")
LAW_ORDER = ("approach2", "approach1")  # the plan stage's primary law comes first
LEVEL = 0.9
BOOTSTRAP = 1000


def default_config() -> ml_collections.ConfigDict:
  """The `validate` block of the ladder config."""
  c = ml_collections.ConfigDict()
  c.budgets = ()  # ((C, C_inf), ...): training FLOPs and per-token inference FLOPs; () = skip
  c.choices = ("t2", "chinchilla")  # of CHOICES
  c.num_questions = 100  # per task (0 = all)
  c.split = "eval"
  c.max_k = 1024  # samples per question a validation run may draw
  c.max_size_ratio = 2.0  # a planned N farther than this factor from every buildable size fails
  return c


# ------------------------------------------------------------------------------ settings

def budgets(v: ml_collections.ConfigDict) -> list[tuple[float, float]]:
  """`validate.budgets` as (C, C_inf) float pairs; raises naming the bad entry."""
  out = []
  for i, pair in enumerate(v.budgets):
    try:
      C, C_inf = (float(x) for x in pair)
    except (TypeError, ValueError):
      C = C_inf = -1.0
    if not (math.isfinite(C) and math.isfinite(C_inf) and C > 0 and C_inf > 0):
      raise ValueError(f"validate.budgets[{i}]={pair!r}: give a (C, C_inf) pair of positive "
                       "FLOP counts, e.g. --config.validate.budgets='((1e12, 1e7),)'")
    if (C, C_inf) in out:
      raise ValueError(f"validate.budgets[{i}]={pair!r} is listed twice; remove the duplicate")
    out.append((C, C_inf))
  return out


def size_family(config: ml_collections.ConfigDict) -> str:
  """The size family ("cpu", "t2") of the ladder's rungs, where validation models are built."""
  families = sorted({sizes.family(str(spec).partition("@")[0]) for spec in config.ladder.rungs})
  if len(families) != 1:
    raise ValueError(f"ladder.rungs mix size families {families}; validation builds models of the "
                     "ladder's one family, so use rungs of one family (cpu-* or t2-*)")
  return families[0]


def check_config(config: ml_collections.ConfigDict, vocab_size: int) -> None:
  """The `validate.*` checks that need no fit: raises ValueError naming the field and the fix."""
  v = config.validate
  if not v.choices:
    raise ValueError(f"validate.choices is empty; choose from {CHOICES}, e.g. ('t2', 'chinchilla')")
  for i, choice in enumerate(v.choices):
    if choice not in CHOICES:
      raise ValueError(f"validate.choices[{i}]={choice!r} is unknown; choose from {CHOICES}")
  if len(set(v.choices)) != len(v.choices):
    raise ValueError(f"validate.choices={tuple(v.choices)!r} lists a choice twice; remove it")
  if v.num_questions < 0:
    raise ValueError(f"validate.num_questions={v.num_questions}: must be >= 0 (0 = all)")
  if v.split not in SPLITS:
    raise ValueError(f"validate.split={v.split!r}: use one of {SPLITS}")
  if v.max_k < 1:
    raise ValueError(f"validate.max_k={v.max_k}: must be a positive integer")
  if not v.max_size_ratio >= 1:
    raise ValueError(f"validate.max_size_ratio={v.max_size_ratio}: must be >= 1 (2 = a planned N "
                     "may lie up to 2x beyond the smallest or largest size)")
  laws = fit_config.requested_laws(config.fit)
  if "chinchilla" in v.choices and laws is not None and "chinchilla" not in laws:
    raise ValueError(f"validate.choices has 'chinchilla' but fit.laws={config.fit.laws!r} does "
                     "not fit the Chinchilla law; add it to fit.laws or drop the choice")
  counts = sizes.family_sizes(size_family(config), vocab_size)
  n_min, n_max = min(counts.values()), max(counts.values())
  tokens_per_step = config.train.global_batch_size * config.data.seq_len
  for i, (C, C_inf) in enumerate(budgets(v)):
    field = f"validate.budgets[{i}]=({C:g}, {C_inf:g})"
    if C < 6.0 * n_min * tokens_per_step:
      raise ValueError(f"{field}: C is below one training step of the smallest model (6·N·batch·"
                       f"seq_len = {6.0 * n_min * tokens_per_step:.3g} FLOPs); raise C")
    if C_inf < 2.0 * n_min:
      raise ValueError(f"{field}: C_inf < 2·N = {2.0 * n_min:.3g} of the smallest model, so no "
                       "model can draw one sample; raise C_inf")
    if math.floor(C_inf / (2.0 * n_max)) > v.max_k:
      raise ValueError(f"{field}: even the largest model would draw k = "
                       f"{math.floor(C_inf / (2.0 * n_max))} > validate.max_k={v.max_k} samples "
                       "per question; lower C_inf or raise validate.max_k")


# ------------------------------------------------------------------------------ planning

@dataclasses.dataclass(frozen=True)
class Run:
  """One (C, C_inf, choice): the planned N, the size it builds, the tokens D and the samples k."""
  C: float
  C_inf: float
  choice: str
  N_planned: float
  size: str
  N: int
  D: int
  k: int

  @property
  def run_id(self) -> str:  # choices of one size at one C share their training run
    return f"{self.size}@C{self.C:.3g}"


@dataclasses.dataclass(frozen=True)
class Law:
  """The fitted law the choices are planned and predicted with: its posterior draws (thinned as the
  plan stage thins them) and tasks, and the Chinchilla draws where the fit has them."""
  name: str
  draws: dict
  tasks: tuple
  chinchilla: Optional[dict]
  grid: object  # the plan stage's optimize.SearchGrid (N within the fitted sizes ×/÷ a factor)


def load_law(config: ml_collections.ConfigDict, workdir: str) -> Law:
  """The plan stage's primary law (Approach 2, else Approach 1) from `workdir/fit/`."""
  from t2jax.fit import planning  # pylint: disable=g-import-not-at-top  (numpyro: only when run)
  summary, posts = planning.load_posteriors(workdir)
  name = next((law for law in LAW_ORDER if law in summary["laws"]), None)
  if name is None:
    raise ValueError(f"the fit in {workdir}/fit has no accuracy law ({summary['laws']}); "
                     "validation needs Approach 1 or 2: fit a results table with sampled counts")
  draws_max = int(config.fit.max_plan_draws)
  chin = planning.law_draws("chinchilla", posts, draws_max) if "chinchilla" in posts else None
  if chin is None and "chinchilla" in config.validate.choices:
    raise ValueError(f"validate.choices has 'chinchilla' but {workdir}/fit has no Chinchilla "
                     "posterior (the fit had no losses table); drop the choice")
  grid = planning.search_grid(config.fit, summary["inputs"]["fitted_range"])
  draws = planning.law_draws(name, posts, draws_max, summary.get("discrepancy", {}).get(name),
                             int(config.fit.seed))
  return Law(name, draws, tuple(planning.law_tasks(name, posts)), chin, grid)


def planned_n(law: Law, pairs: list, choices) -> dict:
  """{(C, C_inf, choice): posterior-median N} with the plan stage's optimizers and draws."""
  from t2jax.fit import planning  # pylint: disable=g-import-not-at-top
  from t2jax.laws import chinchilla, optimize  # pylint: disable=g-import-not-at-top
  fn = planning.PASSK_FNS[law.name]
  Cs = sorted({C for C, _ in pairs})
  C_infs = sorted({C_inf for _, C_inf in pairs})
  median = lambda x: float(optimize.interval(x)["median"])  # noqa: E731
  out = {}
  if "t2" in choices:
    n_SxIxB = optimize.frontier(fn, law.draws, Cs, C_infs, law.grid)["N"]
    out.update({(C, C_inf, "t2"): median(n_SxIxB[:, C_infs.index(C_inf), Cs.index(C)])
                for C, C_inf in pairs})
  if "training_only" in choices:
    n_SxB = optimize.training_only_frontier(fn, law.draws, Cs, k=1.0, grid=law.grid)["N"]
    out.update({(C, C_inf, "training_only"): median(n_SxB[:, Cs.index(C)]) for C, C_inf in pairs})
  if "chinchilla" in choices:
    n_SxB = np.asarray(chinchilla.optimum(law.chinchilla, np.asarray(Cs))[0])
    out.update({(C, C_inf, "chinchilla"): median(n_SxB[:, Cs.index(C)]) for C, C_inf in pairs})
  return out


def plan_runs(config: ml_collections.ConfigDict, law: Law, vocab_size: int) -> list[Run]:
  """Every validation run, built and checked (size, training steps, k) before any training."""
  v = config.validate
  pairs = budgets(v)
  fam = size_family(config)
  tokens_per_step = config.train.global_batch_size * config.data.seq_len
  n_planned = planned_n(law, pairs, v.choices)
  runs = []
  for i, (C, C_inf) in enumerate(pairs):
    for choice in v.choices:
      field = f"validate.budgets[{i}]=({C:g}, {C_inf:g}), choice {choice!r}"
      want = n_planned[(C, C_inf, choice)]
      if not want > 0:
        raise ValueError(f"{field}: the posterior has no feasible N here (median {want}); choose "
                         "another budget")
      size, N = sizes.nearest_size(want, vocab_size, fam)
      ratio = max(N / want, want / N)
      if ratio > v.max_size_ratio * (1 + 1e-9):  # the planner's N bound may sit exactly at it
        raise ValueError(f"{field}: planned N = {want:.3g} lies {ratio:.1f}x from the nearest "
                         f"{fam}-* size ({size}, N = {N:,}) > validate.max_size_ratio="
                         f"{v.max_size_ratio}; choose a budget whose optimum the size table covers")
      steps = round(C / (6.0 * N * tokens_per_step))
      if steps < 1:
        raise ValueError(f"{field}: C buys {C / (6.0 * N * tokens_per_step):.2f} training steps "
                         f"of {size}; raise C")
      k = math.floor(C_inf / (2.0 * N) * (1.0 + 1e-12))
      if k < 1:
        raise ValueError(f"{field}: C_inf < 2·N = {2.0 * N:.3g} of {size}: not one sample; "
                         "raise C_inf")
      if k > v.max_k:
        raise ValueError(f"{field}: {size} would draw k = {k} > validate.max_k={v.max_k} "
                         "samples per question; raise validate.max_k or lower C_inf")
      runs.append(Run(C, C_inf, choice, want, size, N, steps * tokens_per_step, k))
  return runs


# ------------------------------------------------------------------------------ running

def run_config(config: ml_collections.ConfigDict, run: Run) -> ml_collections.ConfigDict:
  """The single-run config of a validation run: the rung recipe with its size and D."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.model.size = run.size
  cfg.train.tokens = run.D
  return cfg


def eval_config(config: ml_collections.ConfigDict, k: int) -> ml_collections.ConfigDict:
  """The ladder's eval settings with k samples per question on the validation questions."""
  cfg = ml_collections.ConfigDict(config.eval.to_dict())
  cfg.num_samples = k
  cfg.num_questions = config.validate.num_questions
  cfg.split = config.validate.split
  return cfg


def _fingerprint(cfg: ml_collections.ConfigDict) -> dict:
  """The settings that determine a run's trained weights (as for rungs)."""
  mixed = sorted(name for name, _ in cfg.data.mixture)
  skip = ("log_every", "checkpoint_every", "keep_checkpoints", "tensorboard", "peak_flops",
          "eval_every")
  return json.loads(json.dumps({
      "seed": cfg.seed, "model": cfg.model.to_dict(), "data": cfg.data.to_dict(),
      "tasks": {name: cfg.tasks[name].to_dict() for name in mixed},
      "train": {k: v for k, v in cfg.train.to_dict().items() if k not in skip}}))


def _check_fingerprint(directory: str, cfg: ml_collections.ConfigDict) -> None:
  path = os.path.join(directory, "run_config.json")
  fingerprint = _fingerprint(cfg)
  if not os.path.exists(path):
    io.write_json(path, fingerprint)
  elif io.read_json(path) != fingerprint:
    raise ValueError(f"validation run {directory} was trained with different settings; use a new "
                     "workdir, or delete that directory to retrain it")


def run_dir(workdir: str, run: Run) -> str:
  return os.path.join(workdir, "validate", "runs", run.run_id)


def run_validate(config: ml_collections.ConfigDict, workdir: str) -> Optional[dict]:
  """The stage: plans and checks every run, trains (skip/resume), evaluates, writes
  `workdir/validate/validation.json` and returns it (None when `validate.budgets` is empty)."""
  if not config.validate.budgets:
    print("validate: validate.budgets is empty; nothing to validate", flush=True)
    return None
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  vocab = tokenizer.padded_vocab_size
  check_config(config, vocab)
  law = load_law(config, workdir)
  runs = plan_runs(config, law, vocab)
  task_objs = [tasks.get_task(name, config.tasks.get(name)) for name in law.tasks]
  for run in runs:
    print(f"validate: C={run.C:g} C_inf={run.C_inf:g} {run.choice}: N*={run.N_planned:.3g} → "
          f"{run.size} (N={run.N:,}), D={run.D:,} ({run.D / run.N:.0f} tok/param), k={run.k}",
          flush=True)
  unique = list({run.run_id: run for run in runs}.values())
  for i, run in enumerate(unique, 1):
    directory = run_dir(workdir, run)
    label = f"[validate {i}/{len(unique)} {run.run_id}] "
    cfg = run_config(config, run)
    _check_fingerprint(directory, cfg)
    if os.path.exists(os.path.join(directory, "train_done.json")):
      print(f"{label}trained already; skipping", flush=True)
    else:
      train.train(cfg, directory, label=label)
  rows = {}
  for run in runs:
    directory = run_dir(workdir, run)
    path = os.path.join(directory, f"eval_k{run.k}.jsonl")
    if (run.run_id, run.k) in rows:
      continue
    if os.path.exists(path):
      print(f"[validate {run.run_id}] evaluated at k={run.k} already; skipping", flush=True)
    else:
      summary = io.read_json(os.path.join(directory, "train_done.json"))
      model_cfg, params, mesh = train.load_params(run_config(config, run), directory, tokenizer)
      out = evaluate.evaluate(model_cfg, params, tokenizer, task_objs, eval_config(config, run.k),
                              model_id=run.run_id, N=summary["N"], D=summary["D"], mesh=mesh)
      io.write_jsonl(path, out)
    rows[(run.run_id, run.k)] = list(io.read_jsonl(path))
  entries = []
  for run in runs:
    summary = io.read_json(os.path.join(run_dir(workdir, run), "train_done.json"))
    N, D = int(summary["N"]), int(summary["D"])
    pred_mean, pred_tasks = predict(law, N, D, run.k, int(config.validate.num_questions))
    meas_mean, meas_tasks = measure(rows[(run.run_id, run.k)], law.tasks, run.k, law.name)
    entries.append({
        "C": run.C, "C_inf": run.C_inf, "choice": run.choice, "size": run.size, "N": N, "D": D,
        "k": run.k, "N_planned": run.N_planned, "tokens_per_param": D / N,
        "train_flops": 6.0 * N * D, "run_id": run.run_id,
        "predicted": pred_mean, "measured": meas_mean,
        "tasks": {t: {"predicted": pred_tasks[t], "measured": meas_tasks[t]} for t in law.tasks}})
  result = {"schema_version": io.SCHEMA_VERSION, "law": law.name, "tasks": list(law.tasks),
            "measured_as": MEASURED_AS[law.name],
            "split": config.validate.split, "num_questions": config.validate.num_questions,
            "level": LEVEL, "entries": entries}
  path = os.path.join(workdir, "validate", "validation.json")
  io.write_json(path, result)
  print(f"validate: wrote {path}", flush=True)
  for line in markdown(entries, law.name):
    print(line, flush=True)
  return result


# ------------------------------------------------------------------------------ predicted, measured

def predict(law: Law, N: float, D: float, k: int, num_questions: int,
            seed: int = 0) -> tuple[dict, dict]:
  """The posterior's task-mean pass@k at (N, D, k) (the planner's objective on every draw, model
  discrepancy included), with `predictive` lo/hi: the interval for a measurement on
  `num_questions` questions per task (Approach 2: the spread of a mean over that many questions
  from each draw's Beta law; Approach 1: the fitted noise σ on log T). Returns
  ({median, lo, hi, predictive: {lo, hi}}, {task: {median, lo, hi}})."""
  from t2jax.fit import backtest, planning  # pylint: disable=g-import-not-at-top
  from t2jax.laws import approach2, optimize  # pylint: disable=g-import-not-at-top
  task_fn = planning.TASK_PASSK_FNS[law.name]
  rng = np.random.default_rng(seed)
  with jax.enable_x64(True):
    draws = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), law.draws)
    q = tuple(jnp.asarray(x, jnp.float64) for x in (N, D, k))
    task_SxT = np.asarray(jax.vmap(lambda p: task_fn(p, *q))(draws))
    if law.name == "approach2":
      a_SxT, b_SxT = (np.asarray(x) for x in jax.vmap(lambda p: approach2.beta_params(p, N, D))(draws))
      twice_SxT = np.asarray(passk.beta_passk(a_SxT, b_SxT, 2.0 * k))
      unwidened_SxT = np.asarray(passk.beta_passk(a_SxT, b_SxT, float(k)))
  if law.name == "approach2":  # task_SxT is widened by the draws' discrepancy already
    noise_SxT = backtest.question_noise(unwidened_SxT, twice_SxT, num_questions)
    measured_SxT = backtest.measured_share(task_SxT, noise_SxT, num_questions, rng)
  else:
    sigma_SxT = np.asarray(law.draws["sigma"])
    neg_log_SxT = -np.log(np.clip(task_SxT, 1e-300, 1))
    measured_SxT = np.exp(-neg_log_SxT * np.exp(sigma_SxT * rng.standard_normal(task_SxT.shape)))
  mean = _floats(optimize.interval(task_SxT.mean(axis=1)))
  spread = optimize.interval(measured_SxT.mean(axis=1))
  mean["predictive"] = {"lo": float(spread["lo"]), "hi": float(spread["hi"])}
  per_task = {t: _floats(optimize.interval(task_SxT[:, j])) for j, t in enumerate(law.tasks)}
  return mean, per_task


MEASURED_AS = {
    "approach2": "mean over questions of pass@k (the share of questions with a correct sample)",
    "approach1": "exp(-mean over questions of -log pass@k), from the Beta-binomial fit of the "
                 "questions' counts (Approach 1's target)"}


def _task_values(n_RxQ, c_RxQ, k: int, law: str) -> np.ndarray:
  """The law's reading of a task's pass@k for each of R question sets (rows): approach2 the mean of
  the unbiased per-question pass@k; approach1 exp(−T(k)) of `targets` (a geometric mean)."""
  if law == "approach2":
    return passk.unbiased_passk(n_RxQ, c_RxQ, k).mean(axis=1)
  R, Q = n_RxQ.shape
  t = targets.neg_log_passk_from_samples(n_RxQ.ravel(), c_RxQ.ravel(), [k],
                                         np.repeat(np.arange(R), Q))
  return np.exp(-t.mean_GxK[:, 0])


def measure(rows: list, task_names, k: int, law: str = "approach2",
            seed: int = 0) -> tuple[dict, dict]:
  """Task-mean pass@k as `law` predicts it (`MEASURED_AS`) from the samples of each question, with
  a 90% bootstrap interval over questions (resampled within each task), and per task:
  ({value, lo, hi}, {task: {value, lo, hi}})."""
  rng = np.random.default_rng(seed)
  tail = (1 - LEVEL) / 2
  boot_TxR, per_task = [], {}
  for t in task_names:
    group = [r for r in rows if r["task"] == t]
    if not group:
      raise ValueError(f"validation rows have no questions of task {t!r}; delete the run's "
                       "eval_k*.jsonl and rerun the validate stage")
    n_Q, c_Q = np.array([r["n"] for r in group]), np.array([r["c"] for r in group])
    idx_RxQ = rng.integers(0, len(group), size=(BOOTSTRAP, len(group)))
    boot_R = _task_values(n_Q[idx_RxQ], c_Q[idx_RxQ], k, law)
    boot_TxR.append(boot_R)
    lo, hi = np.quantile(boot_R, [tail, 1 - tail])
    value = float(_task_values(n_Q[None], c_Q[None], k, law)[0])
    per_task[t] = {"value": value, "lo": float(lo), "hi": float(hi)}
  mean_R = np.mean(boot_TxR, axis=0)
  lo, hi = np.quantile(mean_R, [tail, 1 - tail])
  value = float(np.mean([per_task[t]["value"] for t in task_names]))
  return {"value": value, "lo": float(lo), "hi": float(hi)}, per_task


def _floats(d: dict) -> dict:
  return {key: float(value) for key, value in d.items()}


# ------------------------------------------------------------------------------ report

def _inside(entry: dict) -> bool:
  """Whether the measurement fell inside its predictive interval (the posterior's where an older
  validation.json has none)."""
  p = entry["predicted"].get("predictive", entry["predicted"])
  return p["lo"] <= entry["measured"]["value"] <= p["hi"]


def _describe(e: dict) -> str:
  m = e["measured"]
  return (f"{e['size']}, D/N = {e['tokens_per_param']:.0f}, k = {e['k']}: measured "
          f"{m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]")


def _sentence(group: list) -> str:
  """One sentence on a budget: did T2 beat the Chinchilla-side choice as predicted, and did each
  measurement fall inside its predicted interval."""
  C, C_inf = group[0]["C"], group[0]["C_inf"]
  by = {e["choice"]: e for e in group}
  inside = ", ".join(f"{e['choice']} {'inside' if _inside(e) else 'outside'}" for e in group)
  head = f"At C = {C:.3g}, C_inf = {C_inf:.3g}"
  if "t2" in by and "chinchilla" in by:
    t2, ch = by["t2"], by["chinchilla"]
    if t2["run_id"] == ch["run_id"] and t2["k"] == ch["k"]:
      verdict = (f"the T2 and Chinchilla-side choices round to the same model ({_describe(t2)}), "
                 "so this budget does not compare them")
    else:
      won = t2["measured"]["value"] > ch["measured"]["value"]
      predicted = t2["predicted"]["median"] > ch["predicted"]["median"]
      verdict = (f"the T2 choice ({_describe(t2)}) {'beat' if won else 'did not beat'} the "
                 f"Chinchilla-side choice ({_describe(ch)}), "
                 f"{'as predicted' if won == predicted else 'against the prediction'} "
                 f"({t2['predicted']['median']:.3f} vs {ch['predicted']['median']:.3f})")
  else:
    verdict = "; ".join(f"the {e['choice']} choice ({_describe(e)}, predicted "
                        f"{e['predicted']['median']:.3f})" for e in group)
  return (f"{head}, {verdict}; against the predictive {LEVEL:.0%} intervals the measurements fell: "
          f"{inside}.")


def markdown(entries: list, law: str = "approach2") -> list[str]:
  """The report's validation section: a table and one sentence per budget; pass@k is read as
  `law` predicts it (`MEASURED_AS`)."""
  lines = ["## Validation: trained where the laws point", "",
           f"Predicted by {law}'s posterior at the trained (N, D, k), model discrepancy included "
           "where the fit ran backtests; the predictive interval adds the noise of a measurement "
           f"on the validation questions. Measured pass@k is the {MEASURED_AS[law]}, with a 90% "
           "bootstrap interval over questions.", "",
           "| C | C_inf | choice | size | N | D | D/N | k | predicted pass@k [90%] | "
           "predictive [90%] | measured pass@k [90%] |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for e in entries:
    p, m = e["predicted"], e["measured"]
    pp = p.get("predictive")
    spread = f"[{pp['lo']:.3f}, {pp['hi']:.3f}]" if pp else "n/a"
    lines.append(f"| {e['C']:.3g} | {e['C_inf']:.3g} | {e['choice']} | {e['size']} | {e['N']:,} | "
                 f"{e['D']:,} | {e['tokens_per_param']:.0f} | {e['k']} | {p['median']:.3f} "
                 f"[{p['lo']:.3f}, {p['hi']:.3f}] | {spread} | {m['value']:.3f} "
                 f"[{m['lo']:.3f}, {m['hi']:.3f}] |")
  lines.append("")
  groups: dict = {}
  for e in entries:
    groups.setdefault((e["C"], e["C_inf"]), []).append(e)
  lines.extend(_sentence(group) for group in groups.values())
  return lines


def report_section(workdir: str) -> tuple[Optional[list], list[str]]:
  """(summary entries, markdown lines) from `workdir/validate/validation.json`; (None, []) when the
  validate stage has not run."""
  path = os.path.join(workdir, "validate", "validation.json")
  if not os.path.exists(path):
    return None, []
  result = io.read_json(path)
  return result["entries"], markdown(result["entries"], result["law"])
