"""Fit and plan stages, and the `python -m t2jax.fit` CLI (user guide: docs/fitting.md).

  config    settings: `default_config` (the ladder's `config.fit`), `check_config`
  inputs    reading and validating the tables, held-out rows, which laws can be fitted
  fitting   point fits + NUTS posteriors with convergence checks: `fit_tables`, `run_fit` → fit/
  scoring   posterior predictions for the held-out rows (extrapolation)
  planning  posterior draws through the T2 planner: `plan_dir` → plan/
  __main__  the CLI: fit, plan and report in one run

Importing this package loads only the settings (numpy and ml_collections), so that configs can
embed `default_config()` without loading JAX, NumPyro or matplotlib.
"""

from t2jax.fit.config import default_config, check_config

__all__ = ["default_config", "check_config"]
