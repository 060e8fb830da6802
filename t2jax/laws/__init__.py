"""Scaling laws: tables, Chinchilla, Approach 1 (loss-based T2), Approach 2 (Beta regression)."""

from t2jax.laws.posterior import Posterior

__all__ = ["Posterior"]
