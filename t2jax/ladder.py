"""The checkpoint ladder: rung planning, training and evaluation of every rung, skip and resume.

A rung is one model size trained for one tokens-per-parameter ratio. Rungs at or below
`fit.fit_max_tokens_per_param` fit the laws; the more overtrained ones are held out to measure
how well the laws extrapolate. Every rung lives in `workdir/rungs/<id>/`; a rung whose
`train_done.json` (or `eval.jsonl`) exists is skipped, and a half-trained one resumes from its
newest checkpoint. On CPU, `ladder.workers` processes (default one per usable core, each on its own
core with single-threaded XLA) train and evaluate rungs concurrently (`t2jax.workers`).
"""

import dataclasses
import json
import os
import time

import jax
import ml_collections

from t2jax import data, flops, io, metrics, sizes, tasks, workers
from t2jax import evaluate as evaluate_lib
from t2jax import train as train_lib
from t2jax.fit import inputs as fit_inputs
from t2jax.tokenizer import load_tokenizer


@dataclasses.dataclass(frozen=True)
class Rung:
  size: str
  tokens_per_param: float
  heldout: bool

  @property
  def id(self) -> str:
    return f"{self.size}@{self.tokens_per_param:g}"


def parse_rungs(config: ml_collections.ConfigDict) -> list[Rung]:
  """Rungs from `ladder.rungs`, a list of "size@tokens_per_param" strings, in training order;
  those above `fit.fit_max_tokens_per_param` are marked held out. Also checks `ladder.workers`."""
  ladder, max_tpp = config.ladder, config.fit.fit_max_tokens_per_param
  check_workers(ladder)
  if not ladder.rungs:
    raise ValueError("ladder.rungs is empty; list rungs as 'size@tokens_per_param', "
                     "e.g. ('cpu-90k@20', 'cpu-90k@320')")
  rungs, seen = [], set()
  for i, spec in enumerate(ladder.rungs):
    size, sep, tpp = str(spec).partition("@")
    if not sep:
      raise ValueError(f"ladder.rungs[{i}]={spec!r}: write it as 'size@tokens_per_param'")
    if size not in sizes.SIZES:
      raise ValueError(f"ladder.rungs[{i}]={spec!r}: unknown size {size!r}; choose one of "
                       f"{sorted(sizes.SIZES)}")
    try:
      ratio = float(tpp)
    except ValueError:
      ratio = -1.0
    if ratio <= 0:
      raise ValueError(f"ladder.rungs[{i}]={spec!r}: tokens_per_param must be a positive number")
    rung = Rung(size, ratio, heldout=bool(fit_inputs.is_heldout(ratio, max_tpp)))
    if rung.id in seen:
      raise ValueError(f"ladder.rungs[{i}]={spec!r} is listed twice; remove the duplicate")
    seen.add(rung.id)
    rungs.append(rung)
  if len({r.size for r in rungs if not r.heldout}) < 2:
    raise ValueError("ladder.rungs: the fitted rungs (tokens_per_param <= "
                     f"fit.fit_max_tokens_per_param={max_tpp}) need at "
                     "least two model sizes for the laws to be identifiable")
  return rungs


def selected(ladder: ml_collections.ConfigDict, rungs: list[Rung]) -> list[Rung]:
  """The rungs named in `ladder.only` (ids or 0-based indices; empty: all), e.g. one per job."""
  if not ladder.only:
    return rungs
  ids = [r.id for r in rungs]
  chosen = []
  for item in str(ladder.only).split(","):
    item = item.strip()
    if item.isdigit() and int(item) < len(rungs):
      chosen.append(rungs[int(item)])
    elif item in ids:
      chosen.append(rungs[ids.index(item)])
    else:
      raise ValueError(f"ladder.only={ladder.only!r}: {item!r} is neither a rung id nor an index "
                       f"below {len(rungs)}; rung ids are {', '.join(ids)}")
  return chosen


def rung_config(config: ml_collections.ConfigDict, rung: Rung) -> ml_collections.ConfigDict:
  """The single-run config of one rung: the ladder's model/data/train blocks with its size and D."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.model.size = rung.size
  cfg.train.tokens = 0
  cfg.train.tokens_per_param = rung.tokens_per_param
  return cfg


def rung_dir(workdir: str, rung: Rung) -> str:
  return os.path.join(workdir, "rungs", rung.id)


def _training_fingerprint(cfg: ml_collections.ConfigDict) -> dict:
  """The settings that determine a rung's trained weights."""
  mixed = {name for name, _ in cfg.data.mixture}
  return {"seed": cfg.seed, "model": cfg.model.to_dict(), "data": cfg.data.to_dict(),
          "tasks": {name: cfg.tasks[name].to_dict() for name in sorted(mixed)},
          "train": {k: v for k, v in cfg.train.to_dict().items()
                    if k not in ("log_every", "checkpoint_every", "keep_checkpoints", "tensorboard",
                                 "peak_flops", "eval_every")}}


def _check_fingerprint(directory: str, fingerprint: dict, rung: Rung) -> None:
  """Refuses to resume a rung that was started with different training settings."""
  path = os.path.join(directory, "rung_config.json")
  fingerprint = json.loads(json.dumps(fingerprint))  # tuples → lists, as stored
  if os.path.exists(path):
    stored = io.read_json(path)
    if stored != fingerprint:
      diff = sorted(_diff_keys(stored, fingerprint))
      raise ValueError(f"rung {rung.id} in {directory} was trained with different settings "
                       f"({', '.join(diff)}); use a new workdir, or delete that rung's directory "
                       "to retrain it")
  else:
    io.write_json(path, fingerprint)


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
  elif a != b:
    yield prefix.rstrip(".")


def check_workers(ladder: ml_collections.ConfigDict) -> None:
  n = ladder.workers
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise ValueError(f"ladder.workers={n!r}: use 0 (auto: one worker process per usable core on "
                     "CPU) or a positive number of worker processes")


def pool_size(config: ml_collections.ConfigDict) -> int:
  """How many worker processes train and evaluate rungs: `ladder.workers`, 0 = one per usable core.
  0 means the launcher runs them itself (accelerators, multi-process runs). On CPU even one worker
  is a process of its own, as single-threaded XLA must be set before JAX's backend starts."""
  check_workers(config.ladder)
  n = config.ladder.workers
  if jax.default_backend() != "cpu" or jax.process_count() > 1:
    if n > 1:
      raise ValueError(f"ladder.workers={n}: worker processes are for single-process CPU runs, "
                       f"and this run has the {jax.default_backend()} backend and "
                       f"{jax.process_count()} process(es); set ladder.workers=0 (auto) or 1")
    return 0
  return n or len(os.sched_getaffinity(0))


class RungRunner:
  """Trains and evaluates single rungs of a ladder (in the launcher or in a worker process)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.rungs = {r.id: r for r in parse_rungs(config)}
    self.labels = {rid: f"[{i}/{len(self.rungs)} {rid}] " for i, rid in enumerate(self.rungs, 1)}
    self.tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
    self._tasks = None

  def run(self, rung_id: str, *, train: bool, evaluate: bool) -> None:
    if train:
      self.train(rung_id)
    if evaluate:
      self.evaluate(rung_id)

  def train(self, rung_id: str) -> dict:
    rung = self.rungs[rung_id]
    return train_lib.train(rung_config(self.config, rung), rung_dir(self.workdir, rung),
                           label=self.labels[rung_id])

  def evaluate(self, rung_id: str) -> None:
    """The rung's results rows → its eval.jsonl."""
    rung, label = self.rungs[rung_id], self.labels[rung_id]
    directory = rung_dir(self.workdir, rung)
    summary = io.read_json(os.path.join(directory, "train_done.json"))
    if self._tasks is None:
      self._tasks = [tasks.get_task(name, self.config.tasks.get(name))
                     for name in self.config.eval.tasks]
    model_cfg, params, mesh = train_lib.load_params(rung_config(self.config, rung), directory,
                                                    self.tokenizer)
    print(f"{label}evaluating {len(self._tasks)} tasks", flush=True)
    rows = evaluate_lib.evaluate(model_cfg, params, self.tokenizer, self._tasks, self.config.eval,
                                 model_id=rung.id, N=summary["N"], D=summary["D"], mesh=mesh)
    if jax.process_index() == 0:
      io.write_jsonl(os.path.join(directory, "eval.jsonl"),
                     [{**row, "heldout": rung.heldout} for row in rows])


def run_rungs(config: ml_collections.ConfigDict, workdir: str, *, train: bool = True,
              evaluate: bool = True) -> None:
  """Trains and/or evaluates every selected rung, skipping finished work, and prints a ladder ETA
  from FLOPs. With worker processes (`pool_size`) the rungs run concurrently, largest FLOPs
  first, each trained then evaluated by one worker; else one after another, in ladder order."""
  runner = RungRunner(config, workdir)
  chosen = selected(config.ladder, list(runner.rungs.values()))
  jobs, cost = [], {}
  for rung in chosen:
    directory, label = rung_dir(workdir, rung), runner.labels[rung.id]
    trained = os.path.exists(os.path.join(directory, "train_done.json"))
    cost[rung.id] = _rung_flops(config, rung, runner.tokenizer.padded_vocab_size)
    if train:
      _check_fingerprint(directory, _training_fingerprint(rung_config(config, rung)), rung)
      if trained:
        print(f"{label}trained already; skipping", flush=True)
    elif not trained:
      raise FileNotFoundError(f"rung {rung.id} has not finished training ({directory}); run the "
                              "'train' stage first")
    evaluated = os.path.exists(os.path.join(directory, "eval.jsonl"))
    if evaluate and evaluated:
      print(f"{label}evaluated already; skipping", flush=True)
    job = {"rung": rung.id, "train": train and not trained, "eval": evaluate and not evaluated}
    if job["train"] or job["eval"]:
      jobs.append(job)
  total = sum(cost.values()) if train else 0.0
  eta = _Eta(total, total - sum(cost[j["rung"]] for j in jobs if j["train"]))

  def on_start(job: dict) -> None:
    if job["train"]:
      print(f"{runner.labels[job['rung']]}training ({cost[job['rung']] / total:.0%} of the "
            f"ladder's FLOPs{eta.text()})", flush=True)

  def on_done(job: dict) -> None:
    if job["train"]:
      eta.add(cost[job["rung"]])

  n = pool_size(config)
  if not n:
    for job in jobs:
      on_start(job)
      runner.run(job["rung"], train=job["train"], evaluate=job["eval"])
      on_done(job)
    return
  if not jobs:
    return
  if any(job["train"] for job in jobs):  # tokenize once here, not in every worker
    data.make_train_dataset(config.data, runner.tokenizer, seed=config.seed,
                            mixture_sources=data.task_sources(config.data, config.tasks))
    data.make_eval_batches(config.data, runner.tokenizer, batch_size=1, max_batches=1)
  pool = workers.Pool(min(n, len(jobs)), config, workdir)
  try:
    pool.run(sorted(jobs, key=lambda j: -cost[j["rung"]]), on_start, on_done)
  except BaseException:
    pool.close(kill=True)
    raise
  pool.close()


class _Eta:
  """The ladder's remaining time from the FLOPs trained per second of wall time in this run."""

  def __init__(self, total: float, done: float):
    self.total, self.done, self.timed = total, done, 0.0
    self.t0 = time.perf_counter()

  def add(self, flops_done: float) -> None:
    self.done += flops_done
    self.timed += flops_done

  def text(self) -> str:
    if not self.timed:
      return ""
    rate = self.timed / (time.perf_counter() - self.t0)
    return f", ladder ETA {metrics.fmt_duration((self.total - self.done) / rate)}"


def run_train(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains every selected rung (`run_rungs`); returns their train_done.json summaries."""
  run_rungs(config, workdir, train=True, evaluate=False)
  return [io.read_json(os.path.join(rung_dir(workdir, r), "train_done.json"))
          for r in selected(config.ladder, parse_rungs(config))]


def _rung_flops(config, rung: Rung, vocab_size: int) -> float:
  plan = train_lib.plan_run(rung_config(config, rung), vocab_size)
  return flops.train_flops_per_token(plan.model, config.data.seq_len) * plan.tokens


def run_eval(config: ml_collections.ConfigDict, workdir: str, *, train: bool = False) -> None:
  """Evaluates every selected trained rung (`run_rungs`; with `train`, training them first);
  once every rung of the ladder is evaluated, writes rungs.jsonl and results.jsonl."""
  run_rungs(config, workdir, train=train, evaluate=True)
  rungs = parse_rungs(config)
  missing = [r.id for r in rungs
             if not os.path.exists(os.path.join(rung_dir(workdir, r), "eval.jsonl"))]
  if missing:
    print(f"{len(missing)} rung(s) not evaluated yet ({', '.join(missing)}); rungs.jsonl and "
          "results.jsonl are written once every rung is", flush=True)
    return
  if jax.process_index() != 0:
    return
  rung_rows, result_rows = [], []
  for rung in rungs:
    directory = rung_dir(workdir, rung)
    summary = io.read_json(os.path.join(directory, "train_done.json"))
    result_rows.extend(io.read_jsonl(os.path.join(directory, "eval.jsonl")))
    rung_rows.append({
        "schema_version": io.SCHEMA_VERSION, "model_id": rung.id, "size": rung.size,
        "N": summary["N"], "D": summary["D"], "tokens_per_param": summary["tokens_per_param"],
        "val_loss": summary["val_loss"], "train_flops": summary["train_flops"],
        "heldout": rung.heldout})
  io.write_jsonl(os.path.join(workdir, "rungs.jsonl"), rung_rows)
  io.write_jsonl(os.path.join(workdir, "results.jsonl"), result_rows)
  print(f"wrote {len(rung_rows)} rungs and {len(result_rows)} result rows to {workdir}", flush=True)
