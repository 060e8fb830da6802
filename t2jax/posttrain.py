"""Post-training: does the T2 shift survive fine-tuning?

Every trained rung is fine-tuned on the train questions of `posttrain.tasks` (formatted as
prompt + answer, packed into rows of `data.seq_len + 1` tokens) for `posttrain.epochs` passes, in
each variant: `ft` puts the loss on every token, `sft` on the answer tokens only (the prompt is
masked). Each post-trained model is evaluated like its base rung, and each variant's tables are
fitted and planned with the ladder's laws and budgets:

  workdir/posttrain/<variant>/settings.json          the settings it was run with (checked on rerun)
  workdir/posttrain/<variant>/rungs/<id>/ckpt/       orbax checkpoints (state + data iterator)
  workdir/posttrain/<variant>/rungs/<id>/train_done.json, metrics.jsonl, eval.jsonl
  workdir/posttrain/<variant>/rungs.jsonl, results.jsonl, fit/, plan/

A row of rungs.jsonl copies its base rung's (N, D = pretraining tokens, val_loss = the pretraining
loss the Chinchilla baseline is fitted to) and adds `posttrain_tokens` (positions processed,
padding included), `posttrain_flops` (6·N·posttrain_tokens) and `posttrain_loss`.
`summary(workdir)` and `report_section(workdir)` compare the variants' plans with the base plan.
"""

import json
import math
import os
import time
from typing import Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from t2jax import checkpoint, evaluate, io, ladder, metrics, sharding, tasks, train
from t2jax.tasks import verifiers
from t2jax.tasks.base import Question
from t2jax.tokenizer import Tokenizer, load_tokenizer

VARIANTS = ("ft", "sft")  # ft: loss on every token; sft: loss on the answer tokens only


def default_config() -> ml_collections.ConfigDict:
  """The `posttrain` block of a ladder config."""
  c = ml_collections.ConfigDict()
  c.variants = VARIANTS
  c.tasks = ()  # () = the ladder's eval.tasks that have a train split
  c.rungs = ()  # rung ids to post-train; () = every rung
  c.epochs = 6
  c.max_train_questions = 0  # per task; 0 = its whole train split (synthetic tasks: num_eval)
  c.lr = 0.0  # peak learning rate; 0 = train.lr / 10 (warmup, then cosine to train.min_lr_ratio)
  c.warmup_frac = 0.1  # of the post-training steps
  c.batch_size = 16  # packed sequences per step
  c.checkpoint_every = 50
  c.log_every = 10
  return c


def peak_lr(config: ml_collections.ConfigDict) -> float:
  """`posttrain.lr`, or a tenth of the pretraining `train.lr` when it is 0."""
  return config.posttrain.lr or config.train.lr / 10


def task_names(cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> list[str]:
  """The tasks fine-tuned on: `posttrain.tasks`, or the eval tasks that have a train split."""
  if cfg.tasks:
    return list(cfg.tasks)
  return [name for name in config.eval.tasks
          if "train" in tasks.get_task(name, config.tasks.get(name)).splits]


def train_questions(cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict
                    ) -> dict[str, list[Question]]:
  """{task: its train questions (the first `max_train_questions`)} for every post-training task."""
  out = {}
  for i, name in enumerate(task_names(cfg, config)):
    field = f"posttrain.tasks[{i}]={name!r}" if cfg.tasks else f"eval.tasks entry {name!r}"
    if name not in tasks.task_names():
      raise ValueError(f"{field} is not a task; choose from {tasks.task_names()}")
    try:
      out[name] = tasks.get_task(name, config.tasks.get(name)).questions(
          "train", cfg.max_train_questions or None)
    except ValueError as e:
      raise ValueError(f"{field}: {e}; drop it from posttrain.tasks") from None
  return out


def check_config(cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `posttrain.*` setting, before any work: variants,
  epochs, the schedule, rung ids, tasks without a train split, and train questions that share an
  id (same task) or a normalised prompt (any eval task) with the questions the ladder evaluates."""
  variants = list(cfg.variants)
  bad = [v for v in variants if v not in VARIANTS]
  if bad or not variants or len(set(variants)) != len(variants):
    raise ValueError(f"posttrain.variants={tuple(cfg.variants)!r}: list each of {VARIANTS} at most "
                     "once, e.g. --config.posttrain.variants='(\"ft\", \"sft\")'")
  for name, low in (("epochs", 1), ("batch_size", 1), ("checkpoint_every", 1), ("log_every", 1),
                    ("max_train_questions", 0)):
    if not isinstance(cfg[name], int) or cfg[name] < low:
      raise ValueError(f"posttrain.{name}={cfg[name]!r}: must be an integer >= {low}")
  if not cfg.lr >= 0 or not 0 <= cfg.warmup_frac < 1:
    raise ValueError(f"posttrain.lr={cfg.lr}, posttrain.warmup_frac={cfg.warmup_frac}: need "
                     "lr >= 0 (0 = train.lr / 10) and warmup_frac in [0, 1)")
  ids = [r.id for r in ladder.parse_rungs(config)]
  for i, rung_id in enumerate(cfg.rungs):
    if rung_id not in ids:
      raise ValueError(f"posttrain.rungs[{i}]={rung_id!r} is not a rung of ladder.rungs; rung ids "
                       f"are {', '.join(ids)}")
  questions = train_questions(cfg, config)
  if not questions:
    raise ValueError(f"posttrain.tasks is empty and no eval task ({', '.join(config.eval.tasks)}) "
                     "has a train split; name the tasks to fine-tune on in posttrain.tasks")
  limit = config.eval.num_questions or None
  evals = {name: tasks.get_task(name, config.tasks.get(name)).questions(config.eval.split, limit)
           for name in config.eval.tasks}
  eval_prompts = {verifiers.normalize(q.prompt): (name, q.id)
                  for name, qs in evals.items() for q in qs}
  for name, qs in questions.items():
    eval_ids = {q.id for q in evals.get(name, ())}
    for q in qs:
      hit = (name, q.id) if q.id in eval_ids else eval_prompts.get(verifiers.normalize(q.prompt))
      if hit:
        raise ValueError(
            f"posttrain.tasks: train question {q.id!r} of task {name!r} is also eval question "
            f"{hit[1]!r} of task {hit[0]!r} (eval.split={config.eval.split!r}; same "
            f"{'id' if hit[0] == name and q.id == hit[1] else 'normalised prompt'}); fine-tuning "
            "on evaluated questions would leak the answers: evaluate the 'eval' split, or fix the "
            "task's split")


# ------------------------------------------------------------------------------------- data

def encode_questions(questions: Sequence[Question], tokenizer: Tokenizer
                     ) -> list[tuple[list[int], list[int]]]:
  """(prompt ids, answer ids) per question, tokenized as the evaluation scores them."""
  prompts = tokenizer.encode_batch([q.prompt for q in questions])
  answers = tokenizer.encode_batch([q.answer for q in questions])
  return list(zip(prompts, answers))


def pack(examples: Sequence[tuple[list[int], list[int]]], variant: str, seq_len: int,
         eos_id: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens_RxL1 int32, mask_RxL bool): examples packed whole, in order, into rows of
  `seq_len + 1` tokens that start with EOS, each example `prompt + answer + EOS` (the EOS also
  opens the next one, as documents do in pretraining). `mask_RxL[r, j]` says whether the target
  `tokens_RxL1[r, j + 1]` carries loss: under `ft` every example token, under `sft` the answer
  tokens and their closing EOS; padding (EOS) never does."""
  if variant not in VARIANTS:
    raise ValueError(f"variant={variant!r}: use one of {VARIANTS}")
  rows, masks, row, mask = [], [], [eos_id], []
  for i, (prompt, answer) in enumerate(examples):
    size = len(prompt) + len(answer) + 1
    if size > seq_len or not answer:
      raise ValueError(f"example {i}: prompt + answer + EOS is {size} tokens (answer "
                       f"{len(answer)}), which does not fit data.seq_len={seq_len} or has no "
                       "answer; raise data.seq_len or drop the task")
    if len(row) + size > seq_len + 1:
      rows.append(row)
      masks.append(mask)
      row, mask = [eos_id], []
    row += prompt + answer + [eos_id]
    mask += [variant == "ft"] * len(prompt) + [True] * (len(answer) + 1)
  rows.append(row)
  masks.append(mask)
  tokens_RxL1 = np.full((len(rows), seq_len + 1), eos_id, np.int32)
  mask_RxL = np.zeros((len(rows), seq_len), bool)
  for r, (row, mask) in enumerate(zip(rows, masks)):
    tokens_RxL1[r, :len(row)] = row
    mask_RxL[r, :len(mask)] = mask
  return tokens_RxL1, mask_RxL


class _Rows(Sequence):
  def __init__(self, tokens_RxL1: np.ndarray, mask_RxL: np.ndarray):
    self._tokens, self._mask = tokens_RxL1, mask_RxL

  def __len__(self) -> int:
    return len(self._tokens)

  def __getitem__(self, i: int) -> dict:
    return {"tokens": self._tokens[i], "mask": self._mask[i]}


def batches(tokens_RxL1: np.ndarray, mask_RxL: np.ndarray, batch_size: int, seed: int
            ) -> grain.DatasetIterator:
  """Endless iterator of this process's {"tokens", "mask"} batches, rows reshuffled every epoch;
  orbax (grain.checkpoint) saves and restores its position."""
  count = jax.process_count()
  ds = grain.MapDataset.source(_Rows(tokens_RxL1, mask_RxL)).shuffle(seed=seed).repeat()
  ds = ds[jax.process_index()::count].batch(batch_size // count, drop_remainder=True)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


# ---------------------------------------------------------------------------------- training

def _make_step(model_cfg, tx, schedule, shardings: train.TrainState, mesh):
  """A jitted masked step: sharded state in and out (donated), tokens and mask split by batch."""
  def step(state: train.TrainState, tokens_BxL1, mask_BxL):
    loss, grads = train.loss_and_grads(model_cfg, state.params, tokens_BxL1, mask_BxL=mask_BxL)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return train.TrainState(step=state.step + 1, params=params, opt_state=opt_state), out

  batch_sh = sharding.batch_sharding(mesh)
  return jax.jit(step, in_shardings=(shardings, batch_sh, batch_sh),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def finetune(config: ml_collections.ConfigDict, base_dir: str, directory: str,
             tokens_RxL1: np.ndarray, mask_RxL: np.ndarray, tokenizer: Tokenizer, *,
             label: str = "") -> dict:
  """Fine-tunes the final parameters of the rung run `config` trained in `base_dir` on the packed
  rows, for `posttrain.epochs` passes, into `directory` (resuming from its newest checkpoint);
  returns the summary written last to `directory/train_done.json` (a finished run is skipped)."""
  done_path = os.path.join(directory, "train_done.json")
  if os.path.exists(done_path):
    return io.read_json(done_path)
  cfg = config.posttrain
  layout = train.layout_run(config, tokenizer.padded_vocab_size)
  mesh, seq_len = layout.mesh, config.data.seq_len
  divisor = sharding.batch_divisor(mesh) * jax.process_count()
  if cfg.batch_size % divisor:
    raise ValueError(f"posttrain.batch_size={cfg.batch_size} is not divisible by the data×fsdp "
                     f"mesh axes × processes = {divisor}; choose a multiple of {divisor}")
  steps = max(1, math.ceil(cfg.epochs * len(tokens_RxL1) / cfg.batch_size))
  tokens = steps * cfg.batch_size * seq_len
  plan = train.RunPlan(layout.plan.model, layout.plan.n_params, steps, tokens,
                       max(1, int(cfg.warmup_frac * steps)))
  opt_cfg = ml_collections.ConfigDict(config.train.to_dict())
  opt_cfg.lr = peak_lr(config)
  tx, schedule = train.make_optimizer(opt_cfg, plan)
  shardings = train.state_shardings(plan.model, tx, mesh, layout.param_shardings)
  data_iter = batches(tokens_RxL1, mask_RxL, cfg.batch_size, config.seed)
  ckpt = checkpoint.Checkpointer(os.path.join(directory, "ckpt"), every=cfg.checkpoint_every,
                                 keep=config.train.keep_checkpoints)
  writer = metrics.MetricsWriter(directory, tensorboard=False)
  abstract = checkpoint.abstract_with_shardings(
      jax.eval_shape(lambda: train.create_state(plan.model, tx, shardings, 0)), shardings)
  restored = ckpt.restore_latest(abstract, data_iter)
  if restored is None:
    _, params, _ = train.load_params(config, base_dir, tokenizer)
    start = 0
    state = jax.jit(lambda p: train.TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                               opt_state=tx.init(p)),
                    out_shardings=shardings)(params)
  else:
    start, state = restored
    writer.truncate_after(start)
    print(f"{label}resumed from checkpoint at step {start}", flush=True)
  step_fn = _make_step(plan.model, tx, schedule, shardings, mesh)
  batch_sh = sharding.batch_sharding(mesh)
  print(f"{label}fine-tuning N={plan.n_params:,}: {len(tokens_RxL1)} rows × {cfg.epochs} epochs = "
        f"{steps} steps of {cfg.batch_size}x{seq_len} ({mask_RxL.sum():,} loss tokens per epoch), "
        f"lr {opt_cfg.lr:g}", flush=True)
  progress = metrics.Progress(steps, prefix=label)
  progress.start(start)
  t_start, last = time.perf_counter(), {}
  for step in range(start + 1, steps + 1):
    batch = next(data_iter)
    state, out = step_fn(state, sharding.put_global_batch(batch["tokens"], batch_sh),
                         sharding.put_global_batch(batch["mask"], batch_sh))
    is_ckpt = ckpt.should_save(step) or step == steps
    if not (step % cfg.log_every == 0 or is_ckpt):
      continue
    last = {k: float(v) for k, v in jax.device_get(out).items()}
    if not np.isfinite(last["loss"]):
      ckpt.close()
      writer.close()
      raise FloatingPointError(f"{label}fine-tuning loss is {last['loss']} at or before step "
                               f"{step}; lower posttrain.lr or raise posttrain.warmup_frac and "
                               f"rerun (checkpoints in {os.path.join(directory, 'ckpt')} are kept)")
    writer.write(step, last)
    progress.report(step, **last)
    if is_ckpt:
      ckpt.save(step, state, data_iter)
  ckpt.close()
  writer.close()
  if not last:  # resumed from the final checkpoint: only the summary was missing
    rows = list(io.read_jsonl(writer.path)) if os.path.exists(writer.path) else []
    last = rows[-1] if rows else {}
  summary = {"N": plan.n_params, "steps": steps, "rows": len(tokens_RxL1), "epochs": cfg.epochs,
             "loss_tokens_per_epoch": int(mask_RxL.sum()), "posttrain_tokens": tokens,
             "posttrain_flops": 6.0 * plan.n_params * tokens, "posttrain_loss": last.get("loss"),
             "lr": opt_cfg.lr, "wall_seconds": time.perf_counter() - t_start}
  if jax.process_index() == 0:
    io.write_json(done_path, summary)
  return summary


# ---------------------------------------------------------------------------------- the stage

def variant_dir(workdir: str, variant: str) -> str:
  return os.path.join(workdir, "posttrain", variant)


def _settings(cfg, config, variant: str) -> dict:
  """What determines a variant's post-trained weights (stored, and compared on a rerun)."""
  names = task_names(cfg, config)
  return json.loads(json.dumps({
      "variant": variant, "tasks": {name: config.tasks[name].to_dict() for name in names},
      "epochs": cfg.epochs, "max_train_questions": cfg.max_train_questions,
      "lr": peak_lr(config), "warmup_frac": cfg.warmup_frac,
      "batch_size": cfg.batch_size, "seq_len": config.data.seq_len, "seed": config.seed}))


def _check_settings(directory: str, settings: dict) -> None:
  path = os.path.join(directory, "settings.json")
  if not os.path.exists(path):
    io.write_json(path, settings)
    return
  stored = io.read_json(path)
  diff = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
  if diff:
    raise ValueError(f"{directory} was post-trained with different settings ({', '.join(diff)}); "
                     "use a new workdir, or delete that directory to post-train again")


def _base_rungs(config, workdir: str) -> list[tuple[ladder.Rung, dict]]:
  """(rung, its rungs.jsonl row) of every rung to post-train, in ladder order."""
  path = os.path.join(workdir, "rungs.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist; run the ladder's train and eval stages first")
  rows = {row["model_id"]: row for row in io.read_jsonl(path)}
  wanted = set(config.posttrain.rungs) or set(rows)
  out = []
  for rung in ladder.parse_rungs(config):
    if rung.id in wanted:
      if rung.id not in rows:
        raise FileNotFoundError(f"rung {rung.id} has no row in {path}; run the ladder's eval stage")
      out.append((rung, rows[rung.id]))
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Post-trains, evaluates, fits and plans every variant on the ladder in `workdir`; finished
  fine-tunes and evaluations are skipped, a half-done fine-tune resumes."""
  from t2jax import stages  # pylint: disable=g-import-not-at-top  (stages may import this module)
  cfg = config.posttrain
  check_config(cfg, config)
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  questions = [q for qs in train_questions(cfg, config).values() for q in qs]
  encoded = encode_questions(questions, tokenizer)
  examples = [encoded[i] for i in np.random.default_rng(config.seed).permutation(len(encoded))]
  packed = {v: pack(examples, v, config.data.seq_len, tokenizer.eos_id) for v in cfg.variants}
  eval_tasks = [tasks.get_task(name, config.tasks.get(name)) for name in config.eval.tasks]
  base = _base_rungs(config, workdir)
  for variant in cfg.variants:
    _check_settings(variant_dir(workdir, variant), _settings(cfg, config, variant))
  print(f"posttrain: {', '.join(cfg.variants)} on {len(questions)} train questions of "
        f"{', '.join(task_names(cfg, config))}, {len(base)} rungs", flush=True)
  for i, (rung, row) in enumerate(base, 1):
    rcfg = ladder.rung_config(config, rung)
    for variant in cfg.variants:
      directory = os.path.join(variant_dir(workdir, variant), "rungs", rung.id)
      label = f"[{variant} {i}/{len(base)} {rung.id}] "
      finetune(rcfg, ladder.rung_dir(workdir, rung), directory, *packed[variant], tokenizer,
               label=label)
      eval_path = os.path.join(directory, "eval.jsonl")
      if os.path.exists(eval_path):
        print(f"{label}evaluated already; skipping", flush=True)
        continue
      model_cfg, params, mesh = train.load_params(rcfg, directory, tokenizer)
      print(f"{label}evaluating {len(eval_tasks)} tasks", flush=True)
      rows = evaluate.evaluate(model_cfg, params, tokenizer, eval_tasks, config.eval,
                               model_id=rung.id, N=row["N"], D=row["D"], mesh=mesh)
      if jax.process_index() == 0:
        io.write_jsonl(eval_path, [{**r, "heldout": row["heldout"]} for r in rows])
  if jax.process_index() != 0:
    return
  for variant in cfg.variants:
    write_tables(workdir, variant, base)
  if jax.process_count() > 1:
    print("posttrain: skipping fit and plan in this multi-process run; rerun the posttrain stage "
          "as a single process", flush=True)
    return
  for variant in cfg.variants:
    print(f"posttrain: fit and plan of {variant}", flush=True)
    stages.run_analysis(("fit", "plan"), variant_dir(workdir, variant), config.fit)


def write_tables(workdir: str, variant: str, base: Sequence[tuple[ladder.Rung, dict]]) -> None:
  """posttrain/<variant>/rungs.jsonl (base rows + post-training cost) and results.jsonl."""
  out = variant_dir(workdir, variant)
  rung_rows, result_rows = [], []
  for rung, row in base:
    directory = os.path.join(out, "rungs", rung.id)
    done = io.read_json(os.path.join(directory, "train_done.json"))
    rung_rows.append({**row, "posttrain_tokens": done["posttrain_tokens"],
                      "posttrain_flops": done["posttrain_flops"],
                      "posttrain_loss": done["posttrain_loss"]})
    result_rows.extend(io.read_jsonl(os.path.join(directory, "eval.jsonl")))
  io.write_jsonl(os.path.join(out, "rungs.jsonl"), rung_rows)
  io.write_jsonl(os.path.join(out, "results.jsonl"), result_rows)
  print(f"posttrain {variant}: wrote {len(rung_rows)} rungs and {len(result_rows)} result rows to "
        f"{out}", flush=True)
