"""Ladder presets: `--config=configs/ladder.py:PRESET` (default `cpu`); override any field with
`--config.FIELD=VALUE` (the config is locked, so a misspelt field fails at once).

  smoke  5 tiny rungs, about a minute of training: the pipeline end to end, for tests
  cpu    the default: 9 rungs (40k-150k parameters, 10-200 tokens/parameter) on the shipped corpus
         + synthetic tasks, trained, evaluated at k up to 64, fitted and reported in <= 20 min on 2 cores
  gpu    a ladder for one H100 in about half an hour (NeoX tokenizer, the full Gutenberg corpus)
  paper  the T2 paper's scale (about 5M-901M parameters, up to ~120B tokens) for pods / clusters
"""

import ml_collections

from t2jax import data, evaluate, fit, posttrain, tasks, train, validate

PRESETS = ("smoke", "cpu", "gpu", "paper")


def _grid(sizes_and_ratios: dict) -> tuple:
  return tuple(f"{size}@{r:g}" for size, ratios in sizes_and_ratios.items() for r in ratios)


def _base(preset: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.preset = preset
  config.workdir = f"runs/{preset}"
  config.seed = 0
  config.model = train.default_model_config()
  config.data = data.default_config()
  config.train = train.default_config()
  config.tasks = tasks.default_config()
  config.eval = evaluate.default_config()
  config.fit = fit.default_config()
  config.validate = validate.default_config()
  config.posttrain = posttrain.default_config()  # runs with --stages=posttrain,report
  config.ladder = ml_collections.ConfigDict()
  config.ladder.rungs = ()
  config.ladder.only = ""  # comma-separated rung ids or indices to run (e.g. one per array job)
  # Worker processes for train/eval on CPU, one core each: 0 = one per usable core (1 on
  # accelerators and in multi-process runs, where the launcher runs the rungs itself).
  config.ladder.workers = 0
  config.distributed = ml_collections.ConfigDict(
      {"coordinator_address": "", "num_processes": 0, "process_id": -1})
  return config


def _easy_tasks(t: ml_collections.ConfigDict) -> None:
  """Synthetic tasks that 40k-150k-parameter models learn within a CPU ladder's budget."""
  t.arithmetic.max_operands = 2
  t.arithmetic.max_value = 19
  t.spatial.max_moves = 1
  t.spatial.max_step = 2
  t.causal.max_causes = 2
  t.causal.max_steps = 1
  t.recall.num_entities = 100
  for name in ("arithmetic", "spatial", "causal", "recall"):
    t[name].num_eval = 100


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; use configs/ladder.py:PRESET with PRESET one of "
                     f"{', '.join(PRESETS)}")
  config = _base(preset)
  synthetic = ("arithmetic", "spatial", "causal", "recall")
  if preset in ("smoke", "cpu"):
    config.data.seq_len = 128
    config.data.mixture = tuple((name, 0.1) for name in synthetic)
    config.train.mesh = (1, 1, 1)
    config.train.lr = 1e-2
    config.eval.tasks = synthetic
    _easy_tasks(config.tasks)
  else:  # gpu, paper: bf16, the NeoX tokenizer, the full corpus, data-parallel over every device
    config.model.dtype = "bfloat16"
    config.data.tokenizer = "data/tokenizers/neox-20b.json"
    # A web-scale corpus is the user's: point these at it (JSONL or JSONL.xz with a text field).
    config.data.train_files = ("../shared/data/corpus/gutenberg/train-*.jsonl.xz",)
    config.data.val_files = ("../shared/data/corpus/gutenberg/val.jsonl.xz",)
    config.train.mesh = (-1, 1, 1)
    config.eval.tasks = synthetic + ("arc_easy", "sciq", "openbookqa", "lambada")
  if preset == "smoke":
    config.data.train_files = ("data/corpus/gutenberg-small/train-00-of-04.jsonl.xz",)
    config.data.task_docs = 2000
    config.ladder.rungs = _grid({"cpu-40k": (2, 4, 8), "cpu-60k": (2, 4)})
    config.fit.fit_max_tokens_per_param = 4.0
    config.train.global_batch_size = 16
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.train.eval_batches = 2
    config.eval.tasks = ("arithmetic", "recall")
    config.eval.num_questions = 16
    config.eval.num_samples = 8
    config.fit.num_warmup = 100
    config.fit.num_samples = 100
    # A plumbing check: 4 fitted rungs of 2 sizes cannot pin the posterior, so short chains are
    # kept (the report flags them) rather than refitted.
    config.fit.retries = 0
    config.fit.allow_unconverged = True
    config.fit.likelihood = "normal"  # one likelihood: 'auto' would sample each law twice
    config.posttrain.max_train_questions = 32
    config.posttrain.epochs = 2
    # The same short-chain plumbing check: an unpinned posterior's N* may lie anywhere, so any N
    # is rounded to a buildable size; one 2e10-FLOP run per choice (about 40 steps of cpu-40k).
    config.validate.budgets = ((2e10, 5e5),)
    config.validate.num_questions = 16
    config.validate.max_size_ratio = 1e6
  elif preset == "cpu":
    config.data.train_files = ("data/corpus/gutenberg-small/train-00-of-04.jsonl.xz",)  # 12M tokens
    config.ladder.rungs = _grid({
        "cpu-40k": (10, 20, 40, 200),
        "cpu-60k": (10, 20),
        "cpu-90k": (10, 20),
        "cpu-150k": (10,),
    })
    config.fit.fit_max_tokens_per_param = 40.0
    config.train.global_batch_size = 32
    config.train.checkpoint_every = 500
    # Causal chains stay near zero pass@64 below 150k parameters: left out of this ladder.
    config.data.mixture = tuple((name, 0.1) for name in ("arithmetic", "spatial", "recall"))
    config.eval.tasks = ("arithmetic", "spatial", "recall")
    config.eval.num_questions = 100
    config.eval.num_samples = 64
    config.fit.num_warmup = 600  # the 8 fitted rungs span only 4x in N and D: a long adaptation
    config.fit.num_samples = 300
    # Plan at the ladder's own scale (its rungs cost 1e11-2e12 FLOPs, N·k ≈ 1e5-1e7).
    config.fit.budgets = (1e12, 3e12, 1e13)
    config.fit.inference_budgets = (1e6, 1e7)
    config.fit.queries = (1e3, 1e5)
    # One planned budget: a 1e12-FLOP run per choice (each about the cost of the cpu-90k@20 rung;
    # choices that round to the same size share one), sampled ~40-130 times per question. On the
    # shipped ladder's fit both choices round to cpu-40k here (N* = 4.5e4, N_opt = 3.1e4); sizes
    # that differ need C >= 1e13 on this table, beyond a 2-core budget.
    config.validate.budgets = ((1e12, 1e7),)
  elif preset == "gpu":
    config.data.seq_len = 1024
    config.data.mixture = tuple((name, 0.02) for name in synthetic)
    config.ladder.rungs = _grid({
        "t2-5m": (10, 20, 40, 80, 320, 1280),
        "t2-7m": (10, 20, 40, 80, 320),
        "t2-11m": (10, 20, 40, 80, 320),
        "t2-16m": (10, 20, 40, 80),
        "t2-24m": (10, 20, 40),
    })
    config.train.global_batch_size = 128
    config.train.lr = 2e-3
    config.train.checkpoint_every = 1000
    config.eval.num_questions = 500
    config.eval.num_samples = 256
    # Between the largest rung (~2e17 FLOPs) and the plan's budgets: two runs of ~4 min each.
    config.validate.budgets = ((1e17, 1e9),)
    config.validate.num_questions = 500
  elif preset == "paper":
    config.model.remat = True
    config.data.seq_len = 2048
    config.data.mixture = tuple((name, 0.01) for name in synthetic)
    config.ladder.rungs = _grid({
        "t2-5m": (20, 80, 320, 1280, 5000, 20000),
        "t2-11m": (20, 80, 320, 1280, 5000),
        "t2-24m": (20, 80, 320, 1280, 4000),
        "t2-51m": (20, 80, 320, 1280),
        "t2-124m": (20, 80, 320),
        "t2-254m": (20, 80, 320),
        "t2-421m": (20, 80),
        "t2-644m": (20, 80),
        "t2-901m": (20, 80, 130),
    })
    config.train.global_batch_size = 512
    config.train.lr = 1e-3
    config.train.checkpoint_every = 2000
    # 500: the synthetic tasks' default settings hold fewer than 1000 eval problems (arithmetic
    # 834, causal 706), and recall and openbookqa give 500.
    config.eval.num_questions = 500
    config.eval.num_samples = 1024
    # The T2 paper's headline budget: C = 2.56e19 training FLOPs, C_inf = 2e9 FLOPs per token.
    config.fit.budgets = (1e19, 2.56e19, 1e20, 1e21)
    config.fit.inference_budgets = (1e8, 1e9, 2e9, 1e10)
    # The paper's experiment: new checkpoints at its headline budget (launch/: one host's devices).
    config.validate.budgets = ((2.56e19, 2e9),)
    config.validate.num_questions = 500
  return config
