"""Training: AdamW with warmup + cosine sized to the run's token budget, a jitted sharded step,
eval loss, orbax checkpoints with resume, metrics. CLI:

  python -m t2jax.train --config=configs/ladder.py:cpu --workdir=runs/one \
      --config.model.size=cpu-1m --config.train.tokens_per_param=20
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags
from jax.sharding import Mesh

from t2jax import checkpoint, cli, data, flops, io, metrics, sharding, sizes
from t2jax.model import ModelConfig, Transformer, count_params, init_params, logical_specs
from t2jax.tokenizer import Tokenizer, load_tokenizer


def default_config() -> ml_collections.ConfigDict:
  """The `train` block of a run config."""
  c = ml_collections.ConfigDict()
  c.tokens = 0  # training tokens D; 0 means tokens_per_param × N
  c.tokens_per_param = 20.0
  c.global_batch_size = 32  # sequences per optimizer step
  c.grad_accum = 1  # micro-batches per step (each global_batch_size / grad_accum sequences)
  c.lr = 3e-3
  c.min_lr_ratio = 0.1  # cosine decays to lr × this
  c.warmup_frac = 0.05  # of the run's steps
  c.weight_decay = 0.1
  c.b1 = 0.9
  c.b2 = 0.95
  c.grad_clip = 1.0
  c.mesh = (-1, 1, 1)  # (data, fsdp, tensor); one -1 takes the remaining devices
  c.checkpoint_every = 200
  c.keep_checkpoints = 2
  c.log_every = 20
  c.eval_every = 0  # steps between eval-loss passes; 0 = only at the end
  c.eval_batches = 8
  c.peak_flops = 0.0  # per device, for MFU; 0 = device table, or a measured matmul on CPU
  c.tensorboard = True
  return c


def default_model_config() -> ml_collections.ConfigDict:
  """The `model` block: a named size plus numerics; vocab and length come from the data block."""
  c = ml_collections.ConfigDict()
  c.size = "cpu-1m"
  c.dtype = "auto"  # bfloat16 on accelerators, float32 on CPU
  c.remat = False
  c.tie_embeddings = True
  c.attention_impl = ""  # "" (XLA) or "cudnn"
  return c


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def resolve_dtype(dtype: str) -> str:
  if dtype == "auto":
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return dtype


def build_model_config(config: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
  m = config.model
  return sizes.model_config(
      m.size, vocab_size=vocab_size, max_seq_len=config.data.seq_len, dtype=resolve_dtype(m.dtype),
      remat=m.remat, tie_embeddings=m.tie_embeddings, attention_impl=m.attention_impl or None)


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """What a run will do: its model, token budget and step count (D is rounded up to whole steps)."""
  model: ModelConfig
  n_params: int
  steps: int
  tokens: int
  warmup_steps: int


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `train.*` or `model.*` setting; needs no devices."""
  t, m = config.train, config.model
  if t.tokens < 0 or t.tokens_per_param <= 0:
    raise ValueError(f"train.tokens={t.tokens}, train.tokens_per_param={t.tokens_per_param}: "
                     "tokens must be >= 0 (0 = use tokens_per_param) and tokens_per_param > 0")
  if t.global_batch_size <= 0 or t.grad_accum <= 0 or t.global_batch_size % t.grad_accum:
    raise ValueError(f"train.global_batch_size={t.global_batch_size}, train.grad_accum="
                     f"{t.grad_accum}: both positive, and the batch divisible by grad_accum")
  if not 0 <= t.warmup_frac < 1:
    raise ValueError(f"train.warmup_frac={t.warmup_frac}: must be in [0, 1)")
  if not t.lr > 0 or not 0 <= t.min_lr_ratio <= 1:
    raise ValueError(f"train.lr={t.lr}, train.min_lr_ratio={t.min_lr_ratio}: need lr > 0 and "
                     "min_lr_ratio in [0, 1]")
  for name, low in (("checkpoint_every", 1), ("keep_checkpoints", 1), ("log_every", 1),
                    ("eval_every", 0), ("eval_batches", 1)):
    if t[name] < low:
      raise ValueError(f"train.{name}={t[name]}: must be an integer >= {low}")
  sharding.check_mesh_shape(t.mesh)
  if m.dtype not in ("auto", "float32", "bfloat16"):
    raise ValueError(f"model.dtype={m.dtype!r}: use 'auto' (float32 on CPU, bfloat16 on "
                     "accelerators), 'float32' or 'bfloat16'")
  if m.attention_impl not in ("", "cudnn"):
    raise ValueError(f"model.attention_impl={m.attention_impl!r}: use '' (XLA) or 'cudnn'")


def plan_run(config: ml_collections.ConfigDict, vocab_size: int) -> RunPlan:
  t = config.train
  check_config(config)
  model_cfg = build_model_config(config, vocab_size)
  n_params = count_params(model_cfg)["N"]
  target = t.tokens or t.tokens_per_param * n_params
  tokens_per_step = t.global_batch_size * config.data.seq_len
  steps = max(1, math.ceil(target / tokens_per_step))
  return RunPlan(model_cfg, n_params, steps, steps * tokens_per_step,
                 max(1, int(t.warmup_frac * steps)))


@dataclasses.dataclass(frozen=True)
class RunLayout:
  """Where a run's parameters live: its plan, mesh and the parameters' NamedShardings."""
  plan: RunPlan
  mesh: Mesh
  param_shardings: Any


def layout_run(config: ml_collections.ConfigDict, vocab_size: int) -> RunLayout:
  """The plan, mesh and parameter shardings of a run; training and evaluation both start here."""
  plan = plan_run(config, vocab_size)
  mesh = sharding.make_mesh(config.train.mesh)
  return RunLayout(plan, mesh, param_shardings(plan.model, mesh))


def make_optimizer(t: ml_collections.ConfigDict, plan: RunPlan):
  """AdamW (decay on matrices only), global-norm clipping, warmup + cosine over the run's steps."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=t.lr, warmup_steps=plan.warmup_steps,
      decay_steps=max(plan.steps, plan.warmup_steps + 1), end_value=t.lr * t.min_lr_ratio)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
  tx = optax.chain(
      optax.clip_by_global_norm(t.grad_clip),
      optax.adamw(schedule, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=decay_mask))
  return tx, schedule


def param_shardings(model_cfg: ModelConfig, mesh: Mesh):
  """NamedShardings of the parameter tree, from the model's logical axis names."""
  return sharding.logical_to_sharding(logical_specs(model_cfg), mesh)


def abstract_params(model_cfg: ModelConfig, shardings) -> Any:
  """The parameters' shapes and dtypes with their shardings, computing nothing."""
  return checkpoint.abstract_with_shardings(
      jax.eval_shape(lambda: init_params(model_cfg, jax.random.key(0))), shardings)


def state_shardings(model_cfg: ModelConfig, tx, mesh, param_sh=None):
  """NamedShardings of the whole TrainState: optimizer moments follow their parameters."""
  param_sh = param_shardings(model_cfg, mesh) if param_sh is None else param_sh
  abstract = jax.eval_shape(lambda: init_params(model_cfg, jax.random.key(0)))
  opt_abstract = jax.eval_shape(tx.init, abstract)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, opt_abstract, param_sh,
                                 transform_non_params=lambda _: sharding.replicated(mesh))
  return TrainState(step=sharding.replicated(mesh), params=param_sh, opt_state=opt_sh)


def create_state(model_cfg: ModelConfig, tx, shardings: TrainState, seed: int) -> TrainState:
  """Initialises parameters and optimizer state directly in their shardings."""
  def init(key):
    params = init_params(model_cfg, key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                  mask_BxL: jax.Array | None = None) -> jax.Array:
  """Mean next-token cross entropy in fp32 (nats/token), over the targets where `mask_BxL` is
  set (None: every target)."""
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV.astype(jnp.float32), targets_BxL)
  if mask_BxL is None:
    return ce_BxL.mean()
  weight_BxL = mask_BxL.astype(jnp.float32)
  return (ce_BxL * weight_BxL).sum() / jnp.maximum(weight_BxL.sum(), 1.0)


def loss_fn(model_cfg: ModelConfig, params, tokens_BxL1: jax.Array,
            mask_BxL: jax.Array | None = None) -> jax.Array:
  """Next-token loss of `tokens_BxL1`; `mask_BxL` selects the targets `tokens_BxL1[:, 1:]` that
  count (None: all of them, as in pretraining)."""
  logits_BxLxV = Transformer(model_cfg).apply({"params": params}, tokens_BxL1[:, :-1])
  return cross_entropy(logits_BxLxV, tokens_BxL1[:, 1:], mask_BxL)


def loss_and_grads(model_cfg: ModelConfig, params, tokens_BxL1, grad_accum: int = 1,
                   mask_BxL=None):
  """Loss and gradients, averaged over `grad_accum` equal micro-batches (scanned); with a target
  mask each micro-batch's masked mean counts equally."""
  grad_fn = jax.value_and_grad(lambda p, t, m: loss_fn(model_cfg, p, t, m))
  if grad_accum == 1:
    return grad_fn(params, tokens_BxL1, mask_BxL)
  micro_AxBxL1 = tokens_BxL1.reshape(grad_accum, -1, tokens_BxL1.shape[-1])
  micro_mask_AxBxL = None if mask_BxL is None else mask_BxL.reshape(
      grad_accum, -1, mask_BxL.shape[-1])

  def body(carry, micro):
    loss, grads = grad_fn(params, *micro)
    return jax.tree.map(jnp.add, carry, (loss, grads)), None

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
  (loss, grads), _ = jax.lax.scan(body, zeros, (micro_AxBxL1, micro_mask_AxBxL))
  return jax.tree.map(lambda x: x / grad_accum, (loss, grads))


def make_train_step(model_cfg: ModelConfig, tx, schedule, shardings: TrainState, mesh,
                    grad_accum: int = 1):
  """A jitted step: sharded state in and out (donated), a global batch split over (data, fsdp)."""
  def step(state: TrainState, tokens_BxL1):
    loss, grads = loss_and_grads(model_cfg, state.params, tokens_BxL1, grad_accum)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), out

  return jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def make_eval_fn(model_cfg: ModelConfig, shardings: TrainState, mesh):
  return jax.jit(lambda params, tokens: loss_fn(model_cfg, params, tokens),
                 in_shardings=(shardings.params, sharding.batch_sharding(mesh)),
                 out_shardings=sharding.replicated(mesh))


def _peak_flops(t: ml_collections.ConfigDict) -> tuple[float, str]:
  if t.peak_flops > 0:
    return t.peak_flops, "config"
  peak = flops.device_peak_flops()
  if peak is not None:
    return peak, jax.devices()[0].device_kind
  return flops.measure_matmul_flops(), "measured fp32 matmul"


def _check_batch(config, mesh) -> int:
  t = config.train
  divisor = sharding.batch_divisor(mesh) * t.grad_accum
  if t.global_batch_size % divisor:
    raise ValueError(
        f"train.global_batch_size={t.global_batch_size} is not divisible by data×fsdp mesh axes × "
        f"grad_accum = {divisor} (mesh {dict(mesh.shape)}); choose a multiple of {divisor}")
  if t.global_batch_size % jax.process_count():
    raise ValueError(f"train.global_batch_size={t.global_batch_size}: must be divisible by the "
                     f"{jax.process_count()} processes")
  return t.global_batch_size // jax.process_count()


def train(config: ml_collections.ConfigDict, workdir: str, *, label: str = "") -> dict:
  """Trains one model into `workdir`, resuming from its newest intact checkpoint.

  Returns the run summary (also written to `workdir/train_done.json`, last, atomically). A run whose
  summary exists is not retrained.
  """
  done_path = os.path.join(workdir, "train_done.json")
  if os.path.exists(done_path):
    return io.read_json(done_path)
  t = config.train
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  layout = layout_run(config, tokenizer.padded_vocab_size)
  plan, mesh = layout.plan, layout.mesh
  local_batch = _check_batch(config, mesh)
  train_iter = data.make_train_iterator(
      config.data, tokenizer, global_batch_size=t.global_batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      mixture_sources=data.task_sources(config.data, config.get("tasks")))
  eval_batches = data.make_eval_batches(config.data, tokenizer, batch_size=local_batch,
                                        max_batches=t.eval_batches)

  tx, schedule = make_optimizer(t, plan)
  shardings = state_shardings(plan.model, tx, mesh, layout.param_shardings)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "ckpt"), every=t.checkpoint_every,
                                 keep=t.keep_checkpoints)
  writer = metrics.MetricsWriter(workdir, tensorboard=t.tensorboard)
  abstract = checkpoint.abstract_with_shardings(
      jax.eval_shape(lambda: create_state(plan.model, tx, shardings, config.seed)), shardings)
  restored = ckpt.restore_latest(abstract, train_iter)
  if restored is None:
    state, start = create_state(plan.model, tx, shardings, config.seed), 0
  else:
    start, state = restored
    writer.truncate_after(start)
    print(f"{label}resumed from checkpoint at step {start}", flush=True)

  step_fn = make_train_step(plan.model, tx, schedule, shardings, mesh, t.grad_accum)
  eval_fn = make_eval_fn(plan.model, shardings, mesh)
  batch_sh = sharding.batch_sharding(mesh)

  def eval_loss() -> float:
    losses = [eval_fn(state.params, sharding.put_global_batch(b, batch_sh)) for b in eval_batches]
    return float(np.mean(jax.device_get(losses)))

  peak, peak_source = _peak_flops(t)
  flops_per_token = flops.train_flops_per_token(plan.model, config.data.seq_len)
  tokens_per_step = t.global_batch_size * config.data.seq_len
  print(f"{label}N={plan.n_params:,} D={plan.tokens:,} ({plan.tokens / plan.n_params:.0f} tok/param) "
        f"steps={plan.steps} batch={t.global_batch_size}x{config.data.seq_len} mesh="
        f"{dict(mesh.shape)} dtype={plan.model.dtype} peak={peak:.3g} FLOP/s ({peak_source})",
        flush=True)
  progress = metrics.Progress(plan.steps, prefix=label)
  progress.start(start)
  t_last, s_last, t_start = time.perf_counter(), start, time.perf_counter()
  last = {}
  for step in range(start + 1, plan.steps + 1):
    batch = sharding.put_global_batch(next(train_iter), batch_sh)
    state, out = step_fn(state, batch)
    is_log = step % t.log_every == 0 or step == plan.steps
    is_ckpt = ckpt.should_save(step) or step == plan.steps
    if not (is_log or is_ckpt):
      continue
    out = jax.device_get(out)
    if not np.isfinite(out["loss"]):
      ckpt.close()
      writer.close()
      raise FloatingPointError(
          f"{label}loss is {out['loss']} at or before step {step}; stopping. The last good "
          f"checkpoint (step {max(ckpt.manager.all_steps(), default=0)}) is kept in "
          f"{os.path.join(workdir, 'ckpt')}; lower train.lr or raise train.warmup_frac and rerun")
    now = time.perf_counter()
    tok_s = (step - s_last) * tokens_per_step / max(now - t_last, 1e-9)
    t_last, s_last = now, step
    last = {"loss": float(out["loss"]), "lr": float(out["lr"]), "grad_norm": float(out["grad_norm"]),
            "tokens_per_s": tok_s,
            "mfu": flops.mfu(tok_s, flops_per_token, peak, jax.device_count())}
    if t.eval_every and step % t.eval_every == 0 and step != plan.steps:
      last["val_loss"] = eval_loss()
    if step == plan.steps:
      last["val_loss"] = eval_loss()
    writer.write(step, last)
    if is_log:
      progress.report(step, **{k: v for k, v in last.items() if k != "tokens_per_s"},
                      tok_s=f"{tok_s / 1e3:.1f}k")
    if is_ckpt:
      ckpt.save(step, state, train_iter)
  ckpt.close()
  writer.close()

  if not last:  # resumed from the final checkpoint: only the summary was missing
    last = {"val_loss": eval_loss(), **_last_logged(writer.path)}
  summary = {
      "N": plan.n_params, "D": plan.tokens, "tokens_per_param": plan.tokens / plan.n_params,
      "steps": plan.steps, "size": config.model.size, "params": count_params(plan.model),
      "train_loss": last.get("loss"), "val_loss": last["val_loss"],
      "train_flops": flops.training_flops(plan.n_params, plan.tokens),
      "train_flops_with_attention": flops_per_token * plan.tokens,
      "wall_seconds": time.perf_counter() - t_start, "mesh": dict(mesh.shape),
      "dtype": plan.model.dtype,
  }
  if jax.process_index() == 0:
    io.write_json(done_path, summary)
  return summary


def load_params(config: ml_collections.ConfigDict, workdir: str, tokenizer: Tokenizer):
  """(model config, parameters, mesh) of the newest checkpoint of a finished or running run.

  Reads the parameters only (no optimizer state), straight into their shardings on the run's mesh.
  """
  layout = layout_run(config, tokenizer.padded_vocab_size)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "ckpt"), every=config.train.checkpoint_every)
  restored = ckpt.restore_latest_params(abstract_params(layout.plan.model, layout.param_shardings))
  ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'ckpt')}; train this run first")
  return layout.plan.model, restored[1], layout.mesh


def _last_logged(path: str) -> dict:
  rows = list(io.read_jsonl(path)) if os.path.exists(path) else []
  return {"loss": rows[-1]["loss"]} if rows else {}


def define_flags() -> dict:
  config = cli.config_file_flag(None, "Run config file (configs/ladder.py).")
  flags.mark_flags_as_required(["config"])
  return {"config": config,
          "workdir": flags.DEFINE_string("workdir", None,
                                         "Output directory (default: config.workdir).")}


def main(argv, flags_: dict) -> None:
  from t2jax import config_check  # pylint: disable=g-import-not-at-top  (it imports this module)
  cli.no_extra_args(argv)
  config = flags_["config"].value
  config_check.check_run(config)
  cli.start(config.distributed)
  summary = train(config, flags_["workdir"].value or config.workdir)
  print(f"done: val_loss {summary['val_loss']:.4f} (N={summary['N']:,}, D={summary['D']:,})")


if __name__ == "__main__":
  app.run(functools.partial(main, flags_=define_flags()))
