"""t2jax: Train-to-Test (T2) scaling laws in JAX/Flax.

Train a checkpoint ladder, sample k answers per question, fit Chinchilla and T2
laws (Approach 1 and 2), and plan the optimal model size N, training tokens D and
samples per query k for an end-to-end compute budget.
"""

__version__ = "0.1.0"
