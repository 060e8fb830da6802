"""Evaluation of one model: per question, gold-answer NLL and n verified samples → results rows.

    rows = evaluate(model_cfg, params, tokenizer, [get_task("arithmetic")], default_config(),
                    model_id="cpu-90k@20", N=..., D=...)
    write_results("workdir/results.jsonl", rows)      # + results.csv
    table = passk_table(rows)                         # pass@1, 2, 4, ... with bootstrap CIs

Rows follow the results.jsonl schema (version 1) of docs/DESIGN.md, with the task's properties as
evaluated (its format may differ from the registry's default): `chance`, a guesser's accuracy
(1/num_choices of a lettered task, else 0), and `guessable`, which the fit uses for its chance
floor and to refuse planning k > 1 on a task a fixed answer passes. Sample j of a question is
seeded by (eval.seed, task name, question id, j), so it does not depend on batching, on the number
of questions evaluated or on their order.
"""

import csv
import json
from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from t2jax import io, metrics
from t2jax.model import ModelConfig
from t2jax.passk import unbiased_passk
from t2jax.sampler import Sampler
from t2jax.tasks import Task
from t2jax.tasks.base import SPLITS, stable_hash


def default_config() -> ml_collections.ConfigDict:
  """The `eval` block."""
  c = ml_collections.ConfigDict()
  c.tasks = ("arithmetic", "spatial", "causal", "recall")
  c.split = "eval"
  c.num_questions = 200   # per task (0 = all)
  c.num_samples = 64      # n samples drawn per question
  c.temperature = 1.0
  c.top_p = 1.0
  c.max_new_tokens = 0    # 0 = the task's own budget
  c.k_chunk = 256         # samples decoded together per question (memory: see t2jax/sampler.py)
  c.question_batch = 0    # questions per decode batch; 0 = 256 // k_chunk rows' worth
  c.score_batch = 16      # prompt+answer pairs per teacher-forced NLL batch
  c.keep_samples = 3      # completions stored per row for inspection
  c.prepend_eos = True    # prompts start with EOS, as every training document does
  c.seed = 0
  return c


def check_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad `eval.*` setting (the task names are checked by
  `t2jax.config_check`)."""
  for name in ("num_samples", "k_chunk", "score_batch"):
    if cfg[name] < 1:
      raise ValueError(f"eval.{name}={cfg[name]}: must be a positive integer")
  for name in ("num_questions", "max_new_tokens", "question_batch", "keep_samples"):
    if cfg[name] < 0:
      raise ValueError(f"eval.{name}={cfg[name]}: must be >= 0")
  if cfg.split not in SPLITS:
    raise ValueError(f"eval.split={cfg.split!r}: use one of {SPLITS}")
  if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
    raise ValueError(f"eval.temperature={cfg.temperature}, eval.top_p={cfg.top_p}: need "
                     "temperature >= 0 (0 = greedy) and top_p in (0, 1]")


def _progress(prefix: str, total: int):
  """The sampler's per-batch callback: a progress line at most every 10 s (and the last one)."""
  progress = metrics.Progress(total, prefix, unit="questions", every=10.0)
  tokens = 0

  def on_batch(done: int, new_tokens: int) -> None:
    nonlocal tokens
    tokens += new_tokens
    progress.report(done, tokens=f"{tokens:,}",
                    tok_s=f"{tokens / max(progress.elapsed(), 1e-9):,.0f}")

  return on_batch


def evaluate(model_cfg: ModelConfig, params, tokenizer, tasks: Sequence[Task],
             cfg: ml_collections.ConfigDict, *, model_id: str, N: float, D: float,
             mesh: Optional[Mesh] = None) -> list[dict]:
  """One results row per task × question: n samples, c verified correct, gold NLL, a few samples."""
  check_config(cfg)
  sampler = Sampler(model_cfg, params, tokenizer, mesh=mesh, prepend_eos=cfg.prepend_eos)
  n = cfg.num_samples
  rows = []
  for task in tasks:
    questions = task.questions(cfg.split, cfg.num_questions or None)
    if not questions:
      raise ValueError(f"task {task.name!r} has no {cfg.split!r} questions; check its data files "
                       f"or eval.split")
    max_new = cfg.max_new_tokens or task.max_new_tokens
    chance = 1.0 / task.num_choices if task.num_choices else 0.0
    prompts = [q.prompt for q in questions]
    nll, gold_tokens = sampler.score(prompts, [q.answer for q in questions],
                                     batch_size=cfg.score_batch)
    task_key = jax.random.fold_in(jax.random.key(cfg.seed), stable_hash(task.name) & 0x7FFFFFFF)
    question_ids = [stable_hash(q.id) & 0x7FFFFFFF for q in questions]
    out = sampler.sample_tokens(
        sampler.encode(prompts), n, key=task_key, max_new_tokens=max_new,
        temperature=cfg.temperature, top_p=cfg.top_p, stop_strings=task.stop_strings,
        k_chunk=cfg.k_chunk, q_batch=cfg.question_batch or None, question_ids=question_ids,
        on_batch=_progress(f"[eval {model_id}] {task.name}: ", len(questions)))
    for i, q in enumerate(questions):
      texts = [sampler.decode_completion(out.tokens_QxKxT[i, j, :out.lengths_QxK[i, j]],
                                         task.stop_strings) for j in range(n)]
      rows.append({
          "schema_version": io.SCHEMA_VERSION, "model_id": model_id, "N": N, "D": D,
          "task": task.name, "question_id": q.id, "n": n,
          "c": sum(bool(task.verify(q, text)) for text in texts),
          "nll": float(nll[i]), "nll_per_token": float(nll[i] / gold_tokens[i]),
          "gold_tokens": int(gold_tokens[i]), "chance": chance, "guessable": bool(task.guessable),
          "samples": texts[:cfg.keep_samples]})
  return rows


def passk_table(rows: Sequence[dict], ks: Optional[Sequence[int]] = None, *,
                resamples: int = 1000, level: float = 0.9, seed: int = 0) -> list[dict]:
  """Per model × task × k: mean unbiased pass@k over questions with a bootstrap interval.

  `ks` defaults to 1, 2, 4, ... up to the smallest n of the group. Each row also carries the mean
  of exp(−nll), the probability that one sample reproduces the gold answer, with its interval.
  """
  if not 0 < level < 1:
    raise ValueError(f"passk_table: level={level} must be in (0, 1), e.g. 0.9")
  if resamples < 1:
    raise ValueError(f"passk_table: resamples={resamples} must be >= 1, e.g. 1000")
  groups: dict = {}
  for i, row in enumerate(rows):
    for field in ("model_id", "task", "n", "c", "nll"):
      if field not in row:
        raise ValueError(f"results row {i} has no {field!r} field; rows must follow the "
                         "results.jsonl schema (docs/DESIGN.md)")
    groups.setdefault((row["model_id"], row["task"]), []).append(row)
  rng = np.random.default_rng(seed)
  tail = (1 - level) / 2
  table = []
  for (model_id, task), group in groups.items():
    n_Q = np.array([r["n"] for r in group])
    c_Q = np.array([r["c"] for r in group])
    group_ks = list(ks) if ks is not None else [1 << i for i in range(int(n_Q.min()).bit_length())]
    for k in group_ks:
      if k < 1 or k > n_Q.min():
        raise ValueError(f"passk_table: k={k} for {model_id} / {task}, whose questions have "
                         f"n >= {int(n_Q.min())} samples; use 1 <= k <= {int(n_Q.min())}")
    values_QxK = np.stack([unbiased_passk(n_Q, c_Q, k) for k in group_ks], axis=1)
    p_gold_Q = np.exp(-np.array([r["nll"] for r in group], np.float64))
    stats_Qx = np.concatenate([values_QxK, p_gold_Q[:, None]], axis=1)
    idx_RxQ = rng.integers(0, len(group), size=(resamples, len(group)))
    boot_Rx = stats_Qx[idx_RxQ].mean(axis=1)
    low, high = np.quantile(boot_Rx, [tail, 1 - tail], axis=0)
    mean = stats_Qx.mean(axis=0)
    for j, k in enumerate(group_ks):
      table.append({
          "schema_version": io.SCHEMA_VERSION, "model_id": model_id, "N": group[0].get("N"),
          "D": group[0].get("D"), "task": task, "k": k, "questions": len(group),
          "pass_at_k": mean[j], "pass_at_k_low": low[j], "pass_at_k_high": high[j],
          "p_gold": mean[-1], "p_gold_low": low[-1], "p_gold_high": high[-1]})
  return table


def write_results(path: str, rows: Sequence[dict]) -> tuple[str, str]:
  """Writes `rows` to `path` (JSONL) and beside it as CSV, atomically; returns both paths."""
  if not path.endswith(".jsonl"):
    raise ValueError(f"write_results: path={path!r} must end in .jsonl (the CSV goes beside it)")
  csv_path = path[:-len(".jsonl")] + ".csv"
  io.write_jsonl(path, rows)
  fields = list(dict.fromkeys(key for row in rows for key in row))
  with io.atomic_open(csv_path) as f:
    writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
      writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v
                       for k, v in row.items()})
  return path, csv_path
