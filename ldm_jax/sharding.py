"""The device mesh and how arrays are laid out on it. Model code knows nothing of this."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
  """A 1-D 'data' mesh over all devices of all processes (Auto axis types: GSPMD propagation)."""
  devices = np.array(jax.devices() if devices is None else devices)
  return Mesh(devices, ('data',), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  if global_batch % mesh.size:
    raise ValueError(f'config.training.batch_size={global_batch} is not divisible by the '
                     f'{mesh.size} devices; use a multiple of {mesh.size}')


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This process's numpy batch -> global jax arrays, batch axis sharded over 'data'."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
