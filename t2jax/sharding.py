"""Meshes, logical→mesh axis rules, and the shardings of parameters and batches.

The mesh has three axes, any of them of size 1: `data` (replicated parameters, split batch),
`fsdp` (parameters and batch both split; XLA all-gathers weights per layer), `tensor` (heads, MLP
hidden units and vocabulary split). Model code names logical axes only; this module alone maps them.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
)


def check_mesh_shape(shape: Sequence[int]) -> list[int]:
  """The (data, fsdp, tensor) sizes as ints: three of them, positive or one -1."""
  try:
    shape = [int(s) for s in shape]
  except (TypeError, ValueError):
    raise ValueError(f"train.mesh={shape!r}: give three integer sizes (data, fsdp, tensor), "
                     "e.g. (-1, 1, 1)") from None
  if len(shape) != 3:
    raise ValueError(f"train.mesh={tuple(shape)}: give three sizes (data, fsdp, tensor)")
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"train.mesh={tuple(shape)}: sizes must be positive, with at most one -1")
  return shape


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple:
  """Fills one -1 entry of (data, fsdp, tensor) so the product is `num_devices`."""
  shape = check_mesh_shape(shape)
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"train.mesh={tuple(shape)}: {num_devices} devices are not divisible by "
                       f"{known}; change the fixed sizes")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) > num_devices:
    raise ValueError(f"train.mesh={tuple(shape)} needs {int(np.prod(shape))} devices but only "
                     f"{num_devices} are available; shrink it or use -1 for one axis")
  return tuple(shape)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Optional[Sequence] = None) -> Mesh:
  """A (data, fsdp, tensor) mesh with Auto axis types: XLA propagates shardings inside jit.

  A shape with a -1 spans all devices; a fully given shape uses the first prod(shape) devices.
  """
  devices = list(devices) if devices is not None else jax.devices()
  shape = resolve_mesh_shape(shape, len(devices))
  used = devices[:int(np.prod(shape))]
  missing = set(range(jax.process_count())) - {d.process_index for d in used}
  if missing:
    raise ValueError(f"train.mesh={tuple(shape)} uses {len(used)} of {len(devices)} devices and none "
                     f"of processes {sorted(missing)}; in a multi-process run use -1 for one axis")
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=used)


def logical_to_sharding(specs, mesh: Mesh, rules=LOGICAL_RULES):
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  mesh_specs = nn.logical_to_mesh(specs, rules)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), mesh_specs,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batch dimension split over (data, fsdp); the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def put_global_batch(local_batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Assembles a global array from each process's slice of the batch (multi-host safe)."""
  return jax.make_array_from_process_local_data(sharding, local_batch)


def maybe_initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> None:
  """Calls `jax.distributed.initialize` when a multi-host setup is configured.

  With no coordinator given, JAX auto-detects TPU pods and SLURM; an empty address and
  num_processes <= 1 means single host, and nothing is done.
  """
  if num_processes > 1 or coordinator_address:
    kwargs = {}
    if coordinator_address:
      kwargs["coordinator_address"] = coordinator_address
    if num_processes > 0:
      kwargs["num_processes"] = num_processes
    if process_id >= 0:
      kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
