"""The checkpoint ladder: rung planning, training and evaluation of every rung, skip and resume.

A rung is one model size trained for one tokens-per-parameter ratio. Rungs at or below
`fit.fit_max_tokens_per_param` fit the laws; the more overtrained ones are held out to measure
how well the laws extrapolate. Every rung lives in `workdir/rungs/<id>/`; a rung whose
`train_done.json` (or `eval.jsonl`) exists is skipped, and a half-trained one resumes from its
newest checkpoint.
"""

import dataclasses
import json
import os
import time

import jax
import ml_collections

from t2jax import evaluate, flops, io, metrics, sizes, tasks, train
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
  those above `fit.fit_max_tokens_per_param` are marked held out."""
  ladder, max_tpp = config.ladder, config.fit.fit_max_tokens_per_param
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


def run_train(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains every selected rung in order, skipping finished ones; prints a ladder ETA from FLOPs."""
  rungs = selected(config.ladder, parse_rungs(config))
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  cost = {r.id: _rung_flops(config, r, tokenizer.padded_vocab_size) for r in rungs}
  total = sum(cost.values())
  done_flops, timed_flops, spent, summaries = 0.0, 0.0, 0.0, []
  for i, rung in enumerate(rungs, 1):
    directory = rung_dir(workdir, rung)
    cfg = rung_config(config, rung)
    label = f"[{i}/{len(rungs)} {rung.id}] "
    _check_fingerprint(directory, _training_fingerprint(cfg), rung)
    if os.path.exists(os.path.join(directory, "train_done.json")):
      print(f"{label}trained already; skipping", flush=True)
      summaries.append(io.read_json(os.path.join(directory, "train_done.json")))
      done_flops += cost[rung.id]
      continue
    eta = (f", ladder ETA {metrics.fmt_duration(spent / timed_flops * (total - done_flops))}"
           if spent else "")
    print(f"{label}training ({cost[rung.id] / total:.0%} of the ladder's FLOPs{eta})", flush=True)
    start = time.perf_counter()
    summaries.append(train.train(cfg, directory, label=label))
    spent += time.perf_counter() - start
    done_flops += cost[rung.id]
    timed_flops += cost[rung.id]
  return summaries


def _rung_flops(config, rung: Rung, vocab_size: int) -> float:
  plan = train.plan_run(rung_config(config, rung), vocab_size)
  return flops.train_flops_per_token(plan.model, config.data.seq_len) * plan.tokens


def run_eval(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Evaluates every selected trained rung (skipping evaluated ones); once every rung of the ladder
  is evaluated, writes rungs.jsonl and results.jsonl."""
  rungs = parse_rungs(config)
  todo = {r.id for r in selected(config.ladder, rungs)}
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  task_objs = [tasks.get_task(name, config.tasks.get(name)) for name in config.eval.tasks]
  for i, rung in enumerate(rungs, 1):
    if rung.id not in todo:
      continue
    directory = rung_dir(workdir, rung)
    done_path = os.path.join(directory, "train_done.json")
    eval_path = os.path.join(directory, "eval.jsonl")
    if not os.path.exists(done_path):
      raise FileNotFoundError(f"rung {rung.id} has not finished training ({directory}); run the "
                              "'train' stage first")
    summary = io.read_json(done_path)
    label = f"[{i}/{len(rungs)} {rung.id}] "
    if os.path.exists(eval_path):
      print(f"{label}evaluated already; skipping", flush=True)
    else:
      cfg = rung_config(config, rung)
      model_cfg, params, mesh = train.load_params(cfg, directory, tokenizer)
      print(f"{label}evaluating {len(task_objs)} tasks", flush=True)
      rows = evaluate.evaluate(model_cfg, params, tokenizer, task_objs, config.eval,
                               model_id=rung.id, N=summary["N"], D=summary["D"], mesh=mesh)
      if jax.process_index() == 0:
        io.write_jsonl(eval_path, [{**row, "heldout": rung.heldout} for row in rows])
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
