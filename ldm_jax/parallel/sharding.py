"""The device mesh and how arrays are laid out on it. Model code knows nothing of this.

The mesh has axes ('data', 'fsdp'). The batch is split over both; every array of the train state
(parameters, EMA, optimizer moments) is either replicated or, with fsdp > 1, split along one of
its dimensions over 'fsdp' by the first matching rule of ``config.mesh.fsdp_rules`` (a regex on the
array's path, e.g. 'params/unet/input_blocks_1_0/in_layers_2/kernel'). The paths of an EMA copy
or an Adam moment end like their parameter's, so one rule lays out all three alike. GSPMD inserts
the all-gathers and reduce-scatters; the step's code is the same for every layout.
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ldm_jax.config import ConfigError

AXES = ('data', 'fsdp')
BATCH_AXES = AXES  # the batch dimension is split over every mesh axis


def _fill(sizes: list[int], total: int, what: str) -> list[int]:
  """Replace one -1 in ``sizes`` so that their product is ``total``."""
  if sizes.count(-1) > 1:
    raise ConfigError(f'config.mesh: at most one {what} axis size may be -1, got {sizes}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if known <= 0 or total % known:
      raise ConfigError(f'config.mesh: {what} sizes {sizes} cannot fill {total} devices')
    sizes = [total // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != total:
    raise ConfigError(
      f'config.mesh: {what} sizes {sizes} multiply to {math.prod(sizes)}, but there '
      f'are {total}; set one of them to -1 (fill) or make the product {total}'
    )
  return sizes


def make_mesh(mesh_cfg=None, devices=None) -> Mesh:
  """A ('data', 'fsdp') mesh over all devices of all processes (Auto axis types: GSPMD).

  ``mesh_cfg`` (config.mesh) gives the sizes within a slice (``data``, ``fsdp``) and across slices
  (``dcn_data``, ``dcn_fsdp``; multi-slice TPU jobs); one size of each kind may be -1 (fill).
  None: pure data parallelism over ``devices`` (default: all).
  """
  devices = list(jax.devices() if devices is None else devices)
  if mesh_cfg is None:
    return Mesh(np.array(devices).reshape(len(devices), 1), AXES, axis_types=(AxisType.Auto,) * 2)
  num_slices = len({getattr(d, 'slice_index', 0) for d in devices})
  dcn = _fill([mesh_cfg.dcn_data, mesh_cfg.dcn_fsdp], num_slices, 'across-slice (dcn_*)')
  ici = _fill([mesh_cfg.data, mesh_cfg.fsdp], len(devices) // num_slices, 'within-slice')
  try:
    if num_slices > 1:
      grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices, allow_split_physical_axes=True)
    else:
      grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
  except (AssertionError, NotImplementedError, ValueError):  # topologies mesh_utils does not know
    grid = np.array(devices).reshape([i * d for i, d in zip(ici, dcn)])
  return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * 2)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def check_batch_size(global_batch: int, mesh: Mesh, accum_steps: int = 1) -> None:
  if accum_steps <= 1:
    if global_batch % mesh.size:
      raise ConfigError(
        f'config.training.batch_size={global_batch} is not divisible by the '
        f'{mesh.size} devices; use a multiple of {mesh.size}'
      )
    return
  if global_batch % (accum_steps * mesh.size):
    raise ConfigError(
      f'config.training.batch_size={global_batch} with grad_accum_steps={accum_steps}: each '
      f'micro-batch must split evenly over the {mesh.size} devices; use a batch size that is '
      f'a multiple of {accum_steps * mesh.size}'
    )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This process's numpy batch -> global jax arrays, batch axis sharded over the mesh."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def to_host(x):
  """A (possibly multi-process) global array as one numpy array on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


# -- FSDP -------------------------------------------------------------------------------------


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return '/'.join(parts)


def fsdp_spec(path: str, shape: tuple, fsdp_size: int, rules, min_size: int) -> P:
  """The PartitionSpec of one array: split over 'fsdp' along the dimension its rule picks.

  Rules are (regex, rule) pairs, the first whose regex is found in ``path`` applies: 'largest'
  (the largest dimension divisible by the fsdp size), 'replicate', or a dimension index ('-1':
  the last). Arrays smaller than ``min_size`` elements, with no matching rule, or with no
  divisible dimension are replicated."""
  if fsdp_size <= 1 or math.prod(shape) < min_size or not shape:
    return P()
  match = next(((p, str(r)) for p, r in rules if re.search(p, path)), None)
  if match is None:
    return P()
  pattern, rule = match
  if rule == 'replicate':
    return P()
  if rule == 'largest':
    candidates = sorted(
      (d for d in range(len(shape)) if shape[d] % fsdp_size == 0), key=lambda d: (-shape[d], d)
    )
  else:
    try:
      dim = int(rule) % len(shape)
    except ValueError:
      raise ConfigError(
        f"config.mesh.fsdp_rules: rule {rule!r} for {pattern!r} must be 'largest', "
        "'replicate' or a dimension index such as '-1'"
      ) from None
    candidates = [dim] if shape[dim] % fsdp_size == 0 else []
  if not candidates:
    return P()
  spec = [None] * len(shape)
  spec[candidates[0]] = 'fsdp'
  return P(*spec)


def state_shardings(abstract_tree, mesh: Mesh, mesh_cfg=None):
  """NamedShardings for a pytree of arrays (or ShapeDtypeStructs): replicated, or FSDP by the
  rules of ``mesh_cfg`` (config.mesh) when the mesh's 'fsdp' axis is larger than 1."""
  size = mesh.shape['fsdp']
  if mesh_cfg is None or size <= 1:
    return jax.tree.map(lambda _: replicated(mesh), abstract_tree)
  rules = tuple(tuple(r) for r in mesh_cfg.fsdp_rules)
  for r in rules:
    if len(r) != 2:
      raise ConfigError(f'config.mesh.fsdp_rules entries are (regex, rule) pairs, got {r!r}')
  return jax.tree_util.tree_map_with_path(
    lambda path, a: NamedSharding(
      mesh, fsdp_spec(_path_str(path), tuple(a.shape), size, rules, mesh_cfg.fsdp_min_size)
    ),
    abstract_tree,
  )


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying ``shardings`` (restore targets: Orbax reshards on read)."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
  )


def bytes_per_device(abstract_tree, shardings) -> int:
  """The largest number of bytes any one device holds of the tree, from shapes alone."""
  total = 0
  for a, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    total += math.prod(s.shard_shape(tuple(a.shape))) * np.dtype(a.dtype).itemsize
  return total
