"""Fit and plan stages, and the `python -m t2jax.fit` CLI.

  python -m t2jax.fit --results=results.jsonl [--rungs=rungs.jsonl] --out=DIR \
      [--budget=1e20,1e21] [--inference_budget=1e9,1e11] [--config.num_samples=1000]

writes DIR/fit/, DIR/plan/ and DIR/report/ (report.md, summary.json, figures).

Stages (each reads and writes files only; see docs/fitting.md for every output):
- `fit_tables` / `run_fit`: validates the tables (nothing is written when they are bad), splits the
  held-out rows off, fits every law the tables support (Chinchilla on the losses; Approach 1 and
  Approach 2 on per-question results) as point fits plus NUTS posteriors, checks convergence
  (refusing unconverged chains unless `allow_unconverged`), and scores the held-out rows
  (extrapolation). Writes `fit/`.
- `run_plan`: pushes every posterior draw through the T2 planner (`laws.optimize`) for the
  configured training budgets C, per-token inference budgets C_inf and lifecycle query counts Q,
  beside the training-only (Chinchilla) optimum. Writes `plan/`.
"""

import dataclasses
import functools
import os
import time
from typing import Callable, Optional

import jax.numpy as jnp
import ml_collections
import numpy as np
import numpyro
from absl import app, flags
from ml_collections import config_flags

from t2jax import io, metrics, report
from t2jax.laws import approach1, approach2, chinchilla, optimize
from t2jax.laws import posterior as posterior_lib
from t2jax.laws import table as table_lib

LAWS = ("chinchilla", "approach1", "approach2")
ACCURACY_SOURCES = ("samples", "nll")


def default_config() -> ml_collections.ConfigDict:
  """Fit and plan settings (embedded in the ladder config as `config.fit`)."""
  cfg = ml_collections.ConfigDict()
  cfg.laws = "auto"  # "auto" (every law the tables support) or a comma list of LAWS
  cfg.accuracy = "samples"  # 'samples': counts c of n where drawn; 'nll': p = exp(-nll) only
  cfg.k_grid = ()  # Approach-1 k values; () = 1, 2, 4, ... up to each task's smallest n
  cfg.fit_max_tokens_per_param = 100.0  # rows above are held out, where no `heldout` flag is given
  cfg.floors = ""  # chance accuracy per task, "task=0.25,task2=0"; unlisted: task registry, else 0
  cfg.num_chains = 2
  cfg.num_warmup = 500
  cfg.num_samples = 500
  cfg.seed = 0
  cfg.rhat_max = 1.05
  cfg.retries = 1  # refits of a law whose chains fail the checks, each with twice the draws
  cfg.allow_unconverged = False
  cfg.budgets = (1e18, 1e19, 1e20, 1e21)  # training FLOPs C
  cfg.inference_budgets = (1e8, 1e9, 1e10)  # per-token inference FLOPs C_inf = 2·N·k
  cfg.queries = (1e6, 1e8, 1e10)  # lifecycle: queries Q served
  cfg.prompt_tokens = 128.0  # lifecycle: prompt tokens, encoded once per query
  cfg.gen_tokens = 32.0  # lifecycle: generated tokens per sample
  cfg.max_plan_draws = 400  # posterior draws pushed through the planner (thinned evenly)
  return cfg


def _log(msg: str) -> None:
  print(f"[t2jax.fit] {msg}", flush=True)


# --------------------------------------------------------------------------------- settings

def _floats(cfg, name: str, *, allow_empty: bool = False, minimum: float = 0.0) -> np.ndarray:
  values = np.asarray(tuple(cfg[name]), np.float64)
  if values.ndim != 1 or (not allow_empty and values.size == 0) or not np.all(
      np.isfinite(values) & (values > minimum)):
    raise ValueError(f"fit config `{name}`={tuple(cfg[name])!r}: give a list of finite numbers "
                     f"> {minimum:g}, e.g. --config.{name}='(1e20, 1e21)'")
  return values


def check_config(cfg) -> None:
  """Raises ValueError for a bad fit/plan setting, naming the field and the fix."""
  if cfg.accuracy not in ACCURACY_SOURCES:
    raise ValueError(f"fit config `accuracy`={cfg.accuracy!r}; use one of {ACCURACY_SOURCES}")
  requested_laws(cfg)
  for name, low in (("num_chains", 1), ("num_warmup", 1), ("num_samples", 2), ("max_plan_draws", 1),
                    ("retries", 0)):
    if int(cfg[name]) < low:
      raise ValueError(f"fit config `{name}`={cfg[name]} must be >= {low}")
  if not cfg.rhat_max > 1.0:
    raise ValueError(f"fit config `rhat_max`={cfg.rhat_max} must be > 1 (1.01-1.1 is usual)")
  if not cfg.fit_max_tokens_per_param > 0:
    raise ValueError(f"fit config `fit_max_tokens_per_param`={cfg.fit_max_tokens_per_param} "
                     "must be > 0")
  _floats(cfg, "budgets")
  if any(c_inf <= 0 for c_inf in cfg.inference_budgets):
    raise ValueError(f"fit config `inference_budgets`={tuple(cfg.inference_budgets)!r}: every "
                     "C_inf must be > 0 (k = C_inf/(2N) >= 1); drop 0, the training-only optimum "
                     "(k = 1, no inference cost) is reported beside every row anyway")
  _floats(cfg, "inference_budgets")
  _floats(cfg, "queries")
  _floats(cfg, "k_grid", allow_empty=True, minimum=0.999)
  if cfg.prompt_tokens < 0 or cfg.gen_tokens <= 0:
    raise ValueError(f"fit config: need prompt_tokens >= 0 and gen_tokens > 0, got "
                     f"{cfg.prompt_tokens}, {cfg.gen_tokens}")
  parse_floors(cfg.floors)


def requested_laws(cfg) -> Optional[tuple]:
  """The laws in `cfg.laws`, or None for "auto"."""
  if cfg.laws == "auto":
    return None
  laws = tuple(s.strip() for s in str(cfg.laws).split(",") if s.strip())
  unknown = [law for law in laws if law not in LAWS]
  if unknown or not laws:
    raise ValueError(f"fit config `laws`={cfg.laws!r}: unknown {unknown}; use 'auto' or a comma "
                     f"list of {', '.join(LAWS)}")
  return laws


def parse_floors(text: str) -> dict:
  """"task=0.25,gen=0" → {"task": 0.25, "gen": 0.0}."""
  floors = {}
  for item in filter(None, (s.strip() for s in str(text).split(","))):
    name, sep, value = item.partition("=")
    try:
      floors[name.strip()] = float(value)
    except ValueError:
      floors[name.strip()] = -1.0
    if not sep or not 0.0 <= floors[name.strip()] < 1.0:
      raise ValueError(f"fit config `floors` entry {item!r}: write task=chance with chance in "
                       "[0, 1), e.g. --config.floors='sciq=0.25,arithmetic=0'")
  return floors


def task_floors(task_names, text: str) -> dict:
  """Chance accuracy per task: `floors` first, then 1/num_choices of a registered task, else 0."""
  from t2jax import tasks as tasks_lib  # the registry is only needed for registered task names
  given = parse_floors(text)
  floors = {}
  for name in task_names:
    if name in given:
      floors[name] = given[name]
    elif name in tasks_lib.task_names():
      choices = tasks_lib.get_task(name).num_choices
      floors[name] = 1.0 / choices if choices else 0.0
    else:
      floors[name] = 0.0
  return floors


# ----------------------------------------------------------------------------------- inputs

@dataclasses.dataclass(frozen=True)
class Inputs:
  """Validated tables: losses (one row per model) and/or per-question results, with held-out flags."""
  losses: Optional[table_lib.LossTable]
  results: Optional[table_lib.ResultsTable]
  results_heldout: Optional[np.ndarray]  # bool per results row
  laws: tuple
  skipped: dict  # law (or 'task NAME') -> why it is not fitted


def _flags(rows, name: str, source: str) -> np.ndarray:
  out = []
  for i, row in enumerate(rows, 1):
    value = row.get(name)
    if isinstance(value, bool):
      out.append(value)
    elif str(value).strip().lower() in ("true", "1", "false", "0"):
      out.append(str(value).strip().lower() in ("true", "1"))
    else:
      raise ValueError(f"{source}: data row {i} has `{name}`={value!r}; write true or false")
  return np.array(out, bool)


def _losses_heldout(columns, rows, source, cfg) -> table_lib.LossTable:
  losses = table_lib.losses_from_rows(columns, rows, source)
  if "heldout" not in columns:
    losses = dataclasses.replace(
        losses, heldout=losses.D / losses.N > cfg.fit_max_tokens_per_param)
  return losses


def load_inputs(results_path: str, rungs_path: Optional[str], cfg) -> Inputs:
  """Reads and validates everything the fit needs; raises ValueError before anything is written."""
  check_config(cfg)
  columns, rows = table_lib.read_rows(results_path)
  losses = results = heldout_R = None
  if "task" in columns:
    results = table_lib.results_from_rows(columns, rows, results_path)
    if cfg.accuracy == "nll":
      if not results.has_nll.all():
        bad = (np.flatnonzero(~results.has_nll) + 1)[:10].tolist()
        raise ValueError(f"{results_path}: accuracy='nll' needs `nll` on every row; data rows {bad} "
                         "have none; add nll or use --config.accuracy=samples")
      zeros = np.zeros_like(results.n)
      results = dataclasses.replace(results, n=zeros, c=zeros)
  else:
    losses = _losses_heldout(columns, rows, results_path, cfg)
  if rungs_path:
    if losses is not None:
      raise ValueError(f"--rungs={rungs_path} and --results={results_path} are both loss tables; "
                       "give the per-question results as --results, or drop --rungs")
    rung_columns, rung_rows = table_lib.read_rows(rungs_path)
    losses = _losses_heldout(rung_columns, rung_rows, rungs_path, cfg)
  if results is not None:
    if "heldout" in columns:
      heldout_R = _flags(rows, "heldout", results_path)
    elif rungs_path and "model_id" in columns and "model_id" in rung_columns:
      by_model = dict(zip((str(r.get("model_id")).strip() for r in rung_rows), losses.heldout))
      missing = sorted(set(results.model_id.tolist()) - set(by_model))
      if missing:
        raise ValueError(f"{rungs_path}: has no row for models {missing[:10]} of {results_path}; "
                         "give every evaluated model a rung row, or drop --rungs")
      heldout_R = np.array([by_model[m] for m in results.model_id], bool)
    else:
      heldout_R = results.D / results.N > cfg.fit_max_tokens_per_param
    fit_rows = results.select(~heldout_R)
    if len(np.unique(fit_rows.N)) < 2:
      raise ValueError(f"{results_path}: the rows kept for the fit (not held out) cover "
                       f"{len(np.unique(fit_rows.N))} model size(s); a law needs at least 2; raise "
                       "fit_max_tokens_per_param or add rungs")
  if losses is not None and len(np.unique(losses.fit_rows().N)) < 2:
    raise ValueError(f"{losses.source}: the rungs kept for the fit (not held out) cover fewer than "
                     "2 model sizes; raise fit_max_tokens_per_param or add rungs")
  left_out = {}
  if results is not None and cfg.accuracy == "samples":
    results, heldout_R, left_out = _drop_unsolved_tasks(results, heldout_R)
  laws, skipped = _choose_laws(losses, results, heldout_R, cfg)
  return Inputs(losses, results, heldout_R, laws, {**skipped, **left_out})


def _drop_unsolved_tasks(results, heldout_R) -> tuple:
  """Leaves out of the accuracy laws the tasks that no fitted model ever solved: with c = 0
  everywhere nothing links their pass@k to N and D (the Beta concentration runs off to 0)."""
  fit_rows = results.select(~heldout_R)
  unsolved = [t for t in results.tasks if fit_rows.c[fit_rows.task == t].sum() == 0]
  if not unsolved:
    return results, heldout_R, {}
  left_out = {f"task {t}": "no correct sample in any fitted model; left out of approach1 and "
              "approach2 (evaluate more samples, or train longer)" for t in unsolved}
  for name, why in left_out.items():
    _log(f"{name}: {why}")
  keep_R = ~np.isin(results.task, unsolved)
  if not keep_R.any():
    return None, None, left_out
  return results.select(keep_R), heldout_R[keep_R], left_out


def _choose_laws(losses, results, heldout_R, cfg) -> tuple:
  """The laws to fit and why the others are not; requested but impossible laws raise."""
  why = {}
  if losses is None:
    why["chinchilla"] = "no losses table (give --rungs, or a table with N, D, loss)"
  if results is None:
    why["approach1"] = why["approach2"] = "no per-question results table"
  else:
    fit_rows = results.select(~heldout_R)
    if not cfg.k_grid and not fit_rows.sampled.all():
      why["approach1"] = ("some rows have no samples (n, c) to bound k; set --config.k_grid, "
                          "e.g. '(1, 2, 4, 8)'")
    if not fit_rows.has_nll.all():
      why["approach2"] = "some rows have no gold-answer `nll` for the task loss"
  requested = requested_laws(cfg)
  if requested is None:
    laws = tuple(law for law in LAWS if law not in why)
    if not laws:
      raise ValueError(f"no law can be fitted: {why}")
    return laws, why
  impossible = {law: why[law] for law in requested if law in why}
  if impossible:
    raise ValueError(f"fit config `laws`={cfg.laws!r}: cannot fit {impossible}; fix the tables or "
                     "drop those laws")
  return requested, {law: "not requested" for law in LAWS if law not in requested}


# ----------------------------------------------------------------------------- diagnostics

def convergence(post: posterior_lib.Posterior, rhat_max: float,
                max_divergent_fraction: float = 0.01) -> dict:
  """r-hat, ESS and divergences of a posterior, and the reasons not to trust it.

  Parameters whose draws are all equal (constants carried in the draws, e.g. Approach 2's chance
  `floor`) have no defined r-hat and are skipped.
  """
  rhat, ess, problems = {}, {}, []
  for name, draws in post.draws.items():
    if np.all(draws == draws[:1]):
      continue
    rhat[name] = float(np.max(np.where(np.isfinite(post.rhat[name]), post.rhat[name], np.inf)))
    ess[name] = float(np.min(np.nan_to_num(post.ess[name], nan=0.0)))
    if rhat[name] > rhat_max:
      problems.append(f"r-hat of {name} is {rhat[name]:.3f} > {rhat_max}")
  if post.num_divergences > max_divergent_fraction * post.num_draws:
    problems.append(f"{post.num_divergences} divergent transitions in {post.num_draws} draws "
                    f"(> {max_divergent_fraction:.1%})")
  return {"rhat_max": max(rhat.values()), "ess_min": min(ess.values()), "rhat": rhat, "ess": ess,
          "num_divergences": post.num_divergences, "num_draws": post.num_draws,
          "num_chains": post.num_chains, "converged": not problems, "problems": problems}


class UnconvergedError(ValueError):
  """NUTS chains failed the convergence checks and `allow_unconverged` is off."""


def _interval(x, axis: int = 0, method: str = "linear") -> dict:
  s = optimize.summarize(x, axis=axis, method=method)
  return {"median": s["median"], "lo": s["lo"], "hi": s["hi"]}


def _param_summary(post: posterior_lib.Posterior) -> dict:
  return {name: _interval(v) for name, v in post.draws.items()}


# ------------------------------------------------------------------------------- fitting

def _nuts(cfg, scale: int = 1) -> dict:
  return dict(num_chains=int(cfg.num_chains), num_warmup=scale * int(cfg.num_warmup),
              num_samples=scale * int(cfg.num_samples), seed=int(cfg.seed))


def _k_grid(cfg) -> Optional[np.ndarray]:
  return np.asarray(tuple(cfg.k_grid), np.float64) if cfg.k_grid else None


# Each `_fit_*` runs the point fit once and returns (point summary, sample), where `sample(scale)`
# draws the posteriors with `scale` times the configured warm-up and draws.

def _fit_chinchilla(losses, cfg):
  rows = losses.fit_rows()
  point = chinchilla.fit(rows.N, rows.D, rows.loss)
  return {"params": point.params, "objective": point.objective,
          "num_near_best_starts": point.num_near_best}, lambda scale: {
              "chinchilla": chinchilla.sample_posterior(rows.N, rows.D, rows.loss, point=point,
                                                        **_nuts(cfg, scale))}


def _fit_approach1(results, cfg):
  tables = approach1.table_from_results(results, k_grid=_k_grid(cfg))
  point, fits = {}, {}
  for task, t in tables.items():
    num_k = len(np.unique(t.k))
    _log(f"approach1 [{task}]: {len(t.k) // num_k} models × {num_k} k")
    fits[task] = approach1.fit(t.N, t.D, t.k, t.loss)
    point[task] = {"params": fits[task].params, "objective": fits[task].objective,
                   "k_grid": np.unique(t.k), "num_near_best_starts": fits[task].num_near_best}

  def sample(scale):
    return {f"approach1/{task}": approach1.sample_posterior(
        t.N, t.D, t.k, t.loss, point=fits[task], **dict(_nuts(cfg, scale), seed=int(cfg.seed) + 1 + i))
            for i, (task, t) in enumerate(tables.items())}

  return point, sample


def _fit_approach2(results, cfg):
  data = approach2.prepare(results, floors=task_floors(results.tasks, cfg.floors))
  mle = approach2.fit_mle(data)
  point = {"tasks": list(data.tasks), "floors": dict(zip(data.tasks, data.floor_T)),
           "params": {name: dict(zip(data.tasks, v.tolist())) for name, v in mle.items()}}
  return point, lambda scale: {"approach2": approach2.sample_posterior(
      data, mle=mle, **dict(_nuts(cfg, scale), seed=int(cfg.seed) + 100))}


def sample_until_converged(sample: Callable[[int], dict], *, retries: int, rhat_max: float,
                           log: Callable[[str], None] = lambda msg: None) -> tuple:
  """Runs `sample(scale)` (posteriors by name, NUTS with `scale` times the configured warm-up and
  draws) and, while any posterior fails the convergence checks, again with twice the scale, up to
  `retries` times. Returns (posteriors, their `convergence` diagnostics, attempts made)."""
  for attempt in range(retries + 1):
    posts = sample(2 ** attempt)
    checks = {name: convergence(post, rhat_max) for name, post in posts.items()}
    for name, d in checks.items():
      log(f"{name}: max r-hat {d['rhat_max']:.3f}, min ESS {d['ess_min']:.0f}, "
          f"{d['num_divergences']} divergences{'' if d['converged'] else ' — NOT CONVERGED'}")
    if all(d["converged"] for d in checks.values()):
      break
    if attempt < retries:
      failed = ", ".join(name for name, d in checks.items() if not d["converged"])
      log(f"{failed}: refitting with twice the warm-up and draws (retry {attempt + 1} of {retries})")
  return posts, checks, attempt + 1


def _posterior_path(out_dir: str, name: str) -> str:
  return os.path.join(out_dir, "fit", "posteriors", name.replace("/", "__") + ".npz")


def fit_tables(results_path: str, rungs_path: Optional[str], out_dir: str, cfg) -> dict:
  """Fits every law the tables support; writes `out_dir/fit/` and returns its summary."""
  inputs = load_inputs(results_path, rungs_path, cfg)
  start = time.time()
  for law, why in inputs.skipped.items():
    _log(f"{law}: skipped ({why})")
  point, posts = {}, {}
  fit_results = (inputs.results.select(~inputs.results_heldout)
                 if inputs.results is not None else None)
  fitters = {"chinchilla": lambda: _fit_chinchilla(inputs.losses, cfg),
             "approach1": lambda: _fit_approach1(fit_results, cfg),
             "approach2": lambda: _fit_approach2(fit_results, cfg)}
  diagnostics = {}
  for law in inputs.laws:
    t0 = time.time()
    _log(f"{law}: point fit + NUTS ({cfg.num_chains} chains × {cfg.num_warmup} warm-up + "
         f"{cfg.num_samples} draws)")
    point[law], sample = fitters[law]()
    new, checks, _ = sample_until_converged(sample, retries=int(cfg.retries),
                                            rhat_max=cfg.rhat_max, log=_log)
    posts.update(new)
    diagnostics.update(checks)
    _log(f"{law}: done in {time.time() - t0:.0f}s")
  unconverged = {name: d["problems"] for name, d in diagnostics.items() if not d["converged"]}
  fit_dir = os.path.join(out_dir, "fit")
  if unconverged and not cfg.allow_unconverged:
    io.write_json(os.path.join(fit_dir, "diagnostics.json"), diagnostics)
    raise UnconvergedError(
        f"the NUTS chains did not converge, so no posterior is reported: {unconverged}. Run longer "
        "chains (--config.num_warmup / --config.num_samples), or pass --config.allow_unconverged=True "
        f"to keep them anyway (diagnostics in {fit_dir}/diagnostics.json)")
  for name, post in posts.items():
    post.save(_posterior_path(out_dir, name))
  extrapolation = score_heldout(inputs, posts, cfg)
  summary = {
      "inputs": _describe_inputs(inputs, results_path, rungs_path),
      "laws": list(inputs.laws), "skipped": inputs.skipped, "point": point,
      "posterior": {name: _param_summary(post) for name, post in posts.items()},
      "posterior_files": {name: os.path.relpath(_posterior_path(out_dir, name), out_dir)
                          for name in posts},
      "diagnostics": diagnostics, "converged": not unconverged,
      "extrapolation": extrapolation["summary"], "seconds": time.time() - start,
      "config": cfg.to_dict()}
  io.write_json(os.path.join(fit_dir, "extrapolation.json"), extrapolation)
  io.write_json(os.path.join(fit_dir, "diagnostics.json"), diagnostics)
  io.write_json(os.path.join(fit_dir, "summary.json"), summary)
  _log(f"fit written to {fit_dir} ({time.time() - start:.0f}s)")
  return summary


def _describe_inputs(inputs: Inputs, results_path, rungs_path) -> dict:
  out = {"results": results_path, "rungs": rungs_path}
  if inputs.losses is not None:
    out["loss_rows"] = len(inputs.losses)
    out["loss_rows_heldout"] = int(inputs.losses.heldout.sum())
  if inputs.results is not None:
    r, held = inputs.results, inputs.results_heldout
    out.update(result_rows=len(r), tasks=list(r.tasks),
               models_fit=sorted(set(r.model_id[~held].tolist())),
               models_heldout=sorted(set(r.model_id[held].tolist())))
  return out


# ---------------------------------------------------------------------------- extrapolation

def _scored(approach, quantity, observed_R, pred_SxR, meta_R) -> list:
  s = optimize.summarize(pred_SxR)
  return [dict(meta, approach=approach, quantity=quantity, observed=float(o), predicted=float(m),
               lo=float(lo), hi=float(hi), rel_error=float(m / o - 1.0) if o else None)
          for meta, o, m, lo, hi in zip(meta_R, observed_R, s["median"], s["lo"], s["hi"])]


def _model_task_groups(results):
  """(model_id, task) groups of a results table: list of (model, task, N, D, row mask)."""
  groups = []
  for model in np.unique(results.model_id):
    for task in results.tasks:
      mask = (results.model_id == model) & (results.task == task)
      if mask.any():
        i = np.flatnonzero(mask)[0]
        groups.append((model, task, float(results.N[i]), float(results.D[i]), mask))
  return groups


def score_heldout(inputs: Inputs, posts: dict, cfg) -> dict:
  """Posterior predictions for the held-out rows against what was observed, per approach."""
  rows = []
  if "chinchilla" in inputs.laws and inputs.losses.heldout.any():
    held = inputs.losses.heldout
    N, D = inputs.losses.N[held], inputs.losses.D[held]
    pred = np.asarray(chinchilla.loss(posts["chinchilla"].draws, N, D))
    rows += _scored("chinchilla", "loss", inputs.losses.loss[held], pred,
                    [dict(N=float(n), D=float(d)) for n, d in zip(N, D)])
  if inputs.results is not None and inputs.results_heldout.any():
    held = inputs.results.select(inputs.results_heldout)
    groups = _model_task_groups(held)
    if "approach1" in inputs.laws:
      tables = approach1.table_from_results(held, k_grid=_k_grid(cfg))
      for task, t in tables.items():
        pred = np.asarray(approach1.neg_log_passk(posts[f"approach1/{task}"].draws, t.N, t.D, t.k))
        rows += _scored("approach1", "neg_log_passk", t.loss, pred,
                        [dict(task=task, N=float(n), D=float(d), k=float(k))
                         for n, d, k in zip(t.N, t.D, t.k)])
    if "approach2" in inputs.laws:
      draws = posts["approach2"].draws
      tasks = list(posts["approach2"].meta["tasks"])
      n_max = min(int(held.n[held.sampled].min()) if held.sampled.any() else 1, 1024)
      ks = (np.asarray(tuple(cfg.k_grid), np.float64) if cfg.k_grid
            else approach1.default_k_grid(n_max).astype(np.float64))
      for model, task, N, D, mask in groups:
        obs_K = np.array([report.observed_passk(held.n[mask], held.c[mask], held.nll[mask], int(k))
                          for k in ks])
        pred_SxTxK = np.asarray(approach2.expected_passk(draws, N, D, ks))
        keep = np.isfinite(obs_K)
        rows += _scored("approach2", "passk", obs_K[keep], pred_SxTxK[:, tasks.index(task)][:, keep],
                        [dict(model_id=model, task=task, N=N, D=D, k=float(k)) for k in ks[keep]])
  summary = {}
  for approach in LAWS:
    errors = np.array([abs(r["rel_error"]) for r in rows
                       if r["approach"] == approach and r["rel_error"] is not None])
    covered = [r["lo"] <= r["observed"] <= r["hi"] for r in rows if r["approach"] == approach]
    if errors.size:
      summary[approach] = {"quantity": next(r["quantity"] for r in rows if r["approach"] == approach),
                           "num_points": int(errors.size),
                           "median_abs_rel_error": float(np.median(errors)),
                           "max_abs_rel_error": float(errors.max()),
                           "interval_coverage": float(np.mean(covered))}
  return {"summary": summary, "rows": rows}


# --------------------------------------------------------------------------------- planning

def approach1_mean_passk(params, N, D, k):
  """Mean over tasks of exp(−L̂_t(N, D, k)) for Approach-1 params with a task axis (T,)."""
  return jnp.mean(approach1.passk(params, N, D, k), axis=0)


PASSK_FNS = {"approach1": approach1_mean_passk, "approach2": approach2.task_mean_passk}


def load_posteriors(out_dir: str) -> tuple:
  """(fit summary, {name: Posterior}) written by `fit_tables`."""
  path = os.path.join(out_dir, "fit", "summary.json")
  if not os.path.exists(path):
    raise ValueError(f"{path} does not exist; run the fit stage first")
  summary = io.read_json(path)
  posts = {name: posterior_lib.Posterior.load(os.path.join(out_dir, rel))
           for name, rel in summary["posterior_files"].items()}
  return summary, posts


def law_draws(law: str, posts: dict, max_draws: int) -> dict:
  """Planner draws of a law, thinned evenly to at most `max_draws` (Approach 1: tasks stacked)."""
  if law == "approach1":
    names = sorted(name for name in posts if name.startswith("approach1/"))
    keys = posts[names[0]].draws
    draws = {k: np.stack([posts[name].draws[k] for name in names], axis=1) for k in keys}
  else:
    draws = dict(posts[law].draws)
  S = len(next(iter(draws.values())))
  keep = np.unique(np.linspace(0, S - 1, min(S, max_draws)).round().astype(int))
  return {k: v[keep] for k, v in draws.items()}


_METHODS = {"k": "inverted_cdf"}  # quantiles of the integer k are draws, hence integers


def _plan_entry(out, idx) -> dict:
  """Median, 90% interval and flags of one plan cell (out arrays [S, ...])."""
  entry = {key: _interval(out[key][(slice(None),) + idx], method=_METHODS.get(key, "linear"))
           for key in ("N", "D", "tokens_per_param", "k", "accuracy")}
  entry["feasible_fraction"] = float(np.mean(out["feasible"][(slice(None),) + idx]))
  entry["at_grid_edge_fraction"] = float(np.mean(out["at_grid_edge"][(slice(None),) + idx]))
  return entry


def _frontier_budgets(budgets) -> np.ndarray:
  return np.geomspace(budgets.min() / 10.0, budgets.max() * 10.0, 13)


def plan_law(law: str, draws: dict, cfg, chinchilla_draws: Optional[dict]) -> dict:
  """Every planner output of one law: tables per (C, C_inf) and (C, Q), frontier, isoFLOP curves."""
  fn = PASSK_FNS[law]
  budgets, c_infs = _floats(cfg, "budgets"), _floats(cfg, "inference_budgets")
  queries = _floats(cfg, "queries")
  S = len(next(iter(draws.values())))
  dense = _frontier_budgets(budgets)
  both = np.concatenate([budgets, dense])  # one compiled call for the table and the dense frontier
  t2_all = optimize.frontier(fn, draws, both, c_infs)
  train_all = optimize.training_only_frontier(fn, draws, both, k=1.0)
  t2 = {key: v[..., :len(budgets)] for key, v in t2_all.items()}
  train_only = {key: v[..., :len(budgets)] for key, v in train_all.items()}
  t2_dense = {key: v[..., len(budgets):] for key, v in t2_all.items()}
  train_dense = {key: v[..., len(budgets):] for key, v in train_all.items()}
  baselines = {"training_only": train_only["N"]}
  if chinchilla_draws is not None:
    n_opt_SxB = np.asarray(chinchilla.optimum(chinchilla_draws, budgets)[0])
    baselines["chinchilla"] = np.resize(n_opt_SxB, (S, len(budgets)))
  sampled = {name: optimize.baseline_at(fn, draws, n_SxB, budgets, c_infs)
             for name, n_SxB in baselines.items()}
  inference = []
  for i, c_inf in enumerate(c_infs):
    for b, C in enumerate(budgets):
      entry = dict(C=C, C_inf=c_inf, **_plan_entry(t2, (i, b)))
      for name, out in sampled.items():
        entry[name] = {key: _interval(out[key][:, i, b], method=_METHODS.get(key, "linear"))
                       for key in ("N", "D", "tokens_per_param", "k", "accuracy")}
      inference.append(entry)
  life = optimize.lifecycle_frontier(fn, draws, budgets, queries, float(cfg.prompt_tokens),
                                     float(cfg.gen_tokens))
  lifecycle = [dict(C=C, queries=q, **_plan_entry(life, (j, b)))
               for j, q in enumerate(queries) for b, C in enumerate(budgets)]
  frontier = {"C": dense, "inference_budgets": c_infs,
              "t2": {key: _interval(t2_dense[key], method=_METHODS.get(key, "linear"))
                     for key in ("N", "tokens_per_param", "k", "accuracy")},
              "training_only": {key: _interval(train_dense[key])
                                for key in ("N", "tokens_per_param", "accuracy")}}
  if chinchilla_draws is not None:
    n_opt_SxC = np.asarray(chinchilla.optimum(chinchilla_draws, dense)[0])
    frontier["chinchilla"] = {"N": _interval(n_opt_SxC),
                              "tokens_per_param": _interval(dense / (6.0 * n_opt_SxC ** 2))}
  isoflop = []
  for C in budgets:
    N_M = np.sqrt(C / 6.0 / np.geomspace(1e5, 1.0, 61))  # tokens per parameter 1e5 … 1
    curves = optimize.isoflop_curves(fn, draws, C, N_M, ks=[1.0], inference_budgets=c_infs)
    isoflop.append({"C": C, "N": N_M, "k1": _interval(curves["by_k"][:, 0]),
                    "by_inference": [_interval(curves["by_inference"][:, i])
                                     for i in range(len(c_infs))]})
  return {"num_draws": S, "inference": inference, "lifecycle": lifecycle, "frontier": frontier,
          "isoflop": isoflop, "lifecycle_settings": {"prompt_tokens": cfg.prompt_tokens,
                                                     "gen_tokens": cfg.gen_tokens}}


def plan_dir(out_dir: str, cfg) -> dict:
  """Plans from the posteriors in `out_dir/fit/`; writes `out_dir/plan/plan.json` and returns it."""
  check_config(cfg)
  summary, posts = load_posteriors(out_dir)
  start = time.time()
  chin = law_draws("chinchilla", posts, int(cfg.max_plan_draws)) if "chinchilla" in posts else None
  plan = {"budgets": _floats(cfg, "budgets"), "inference_budgets": _floats(cfg, "inference_budgets"),
          "queries": _floats(cfg, "queries"), "laws": {}}
  if chin is not None:
    budgets = plan["budgets"]
    n_SxB, d_SxB = (np.asarray(x) for x in chinchilla.optimum(chin, budgets))
    plan["chinchilla"] = [{"C": C, "N": _interval(n_SxB[:, b]), "D": _interval(d_SxB[:, b]),
                           "tokens_per_param": _interval(d_SxB[:, b] / n_SxB[:, b])}
                          for b, C in enumerate(budgets)]
  for law in ("approach2", "approach1"):
    if law in summary["laws"]:
      t0 = time.time()
      _log(f"plan {law}: {cfg.max_plan_draws} draws max through the planner")
      plan["laws"][law] = plan_law(law, law_draws(law, posts, int(cfg.max_plan_draws)), cfg, chin)
      _log(f"plan {law}: done in {time.time() - t0:.0f}s")
  plan["primary"] = next(iter(plan["laws"]), None)
  plan["seconds"] = time.time() - start
  io.write_json(os.path.join(out_dir, "plan", "plan.json"), plan)
  _log(f"plan written to {os.path.join(out_dir, 'plan', 'plan.json')}")
  return plan


# ------------------------------------------------------------------------- ladder stages

def run_fit(workdir: str, cfg) -> dict:
  """The ladder's fit stage: workdir/results.jsonl (+ rungs.jsonl) → workdir/fit/."""
  rungs = os.path.join(workdir, "rungs.jsonl")
  return fit_tables(os.path.join(workdir, "results.jsonl"), rungs if os.path.exists(rungs) else None,
                    workdir, cfg)


def run_plan(workdir: str, cfg) -> dict:
  """The ladder's plan stage: workdir/fit/ → workdir/plan/plan.json."""
  return plan_dir(workdir, cfg)


# ------------------------------------------------------------------------------------- CLI

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
      "config": config_flags.DEFINE_config_dict("config", default_config(), "Fit/plan settings.",
                                                sys_argv=argv, **fv),
  }


def _float_list(name: str, values) -> tuple:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise ValueError(f"--{name}={','.join(values)}: write FLOPs as numbers, e.g. 1e20,1e21") from None


def main(argv, cli: dict) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go in --config.FIELD=VALUE")
  if not cli["results"].value or not cli["out"].value:
    raise app.UsageError("--results and --out are required")
  cfg = cli["config"].value
  metrics.quiet_library_logs()
  if cli["budget"].value:
    cfg.budgets = _float_list("budget", cli["budget"].value)
  if cli["inference_budget"].value:
    cfg.inference_budgets = _float_list("inference_budget", cli["inference_budget"].value)
  numpyro.set_host_device_count(int(cfg.num_chains))  # chains in parallel, one CPU device each
  fit_tables(cli["results"].value, cli["rungs"].value, cli["out"].value, cfg)
  plan_dir(cli["out"].value, cfg)
  _log(f"report: {report.write_report(cli['out'].value, cfg)}")


if __name__ == "__main__":
  app.run(functools.partial(main, cli=define_flags()))
