"""Tokenizes a ladder's training corpus, validation files and task mixture into `data.cache_dir`
once, so that the many processes of a cluster job memory-map the caches instead of all tokenizing
the corpus at the same time. Takes the same --config flags as `python -m t2jax.launch`:

  JAX_PLATFORMS=cpu python launch/prepare_data.py --config=configs/ladder.py:gpu
"""

from absl import app
from ml_collections import config_flags

from t2jax import data, io
from t2jax.tokenizer import load_tokenizer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ladder.py",
                                          "Ladder config: configs/ladder.py[:PRESET].",
                                          lock_config=True)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go in --config.FIELD=VALUE")
  config = _CONFIG.value
  tokenizer = load_tokenizer(io.resolve_path(config.data.tokenizer))
  data.make_train_dataset(config.data, tokenizer, seed=config.seed)
  data.make_eval_batches(config.data, tokenizer, batch_size=1, max_batches=1)
  print(f"token caches ready in {io.resolve_path(config.data.cache_dir)}", flush=True)


if __name__ == "__main__":
  app.run(main)
