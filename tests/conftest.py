"""Test setup: a fake 8-device CPU platform, set before jax is imported anywhere, and the host
allocator setting the entry points use (`cli.reuse_freed_memory`)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from t2jax import cli  # noqa: E402  (after XLA_FLAGS)

cli.reuse_freed_memory()
