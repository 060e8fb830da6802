"""Tokenizes a ladder's training corpus, validation files and task mixture into `data.cache_dir`
once, so that the many processes of a cluster job memory-map the caches instead of all tokenizing
the corpus at the same time. Takes the same --config flags as `python -m t2jax.launch`:

  JAX_PLATFORMS=cpu python launch/prepare_data.py --config=configs/ladder.py:gpu
"""

import functools

from absl import app

from t2jax import cli, config_check, data, io
from t2jax.tokenizer import load_tokenizer


def define_flags() -> dict:
  return {"config": cli.config_file_flag("configs/ladder.py",
                                         "Ladder config: configs/ladder.py[:PRESET].")}


def main(argv, flags_: dict) -> None:
  cli.no_extra_args(argv)
  config = flags_["config"].value
  config_check.check_run(config)
  cli.start()
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  data.make_train_dataset(config.data, tokenizer, seed=config.seed,
                          mixture_sources=data.task_sources(config.data, config.tasks))
  data.make_eval_batches(config.data, tokenizer, batch_size=1, max_batches=1)
  print(f"token caches ready in {io.resolve_path(config.data.cache_dir)}", flush=True)


if __name__ == "__main__":
  app.run(functools.partial(main, flags_=define_flags()))
