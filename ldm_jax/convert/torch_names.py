"""How CompVis PyTorch state-dict keys map onto ldm_jax parameter trees.

Rule: split the key at dots, fold every numeric segment into the segment before it
(``input_blocks.4.1.qkv`` -> ``input_blocks_4_1/qkv``), and rename the leaf: ``weight`` becomes
``kernel`` (Conv/Linear, transposed), ``scale`` (GroupNorm/LayerNorm) or ``embedding`` (nn.Embedding)
by what the Flax module holds; ``bias`` and parameters held by name stay. The converters and the architecture tests use this.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ldm_jax.errors import UserError


def module_path(torch_key: str) -> tuple[str, ...]:
  """``encoder.down.0.block.1.norm1.weight`` -> ('encoder', 'down_0', 'block_1', 'norm1', 'weight')."""
  out: list[str] = []
  for seg in torch_key.split('.'):
    if seg.isdigit() and out:
      out[-1] = f'{out[-1]}_{seg}'
    else:
      out.append(seg)
  return tuple(out)


def _lookup(tree: Mapping, path: Sequence[str]):
  node = tree
  for p in path:
    if not isinstance(node, Mapping) or p not in node:
      return None
    node = node[p]
  return node


def flax_leaf_for(params: Mapping, torch_key: str) -> tuple[tuple[str, ...], str] | None:
  """(flax path, kind) of the leaf holding ``torch_key``; kind says how to transform the tensor:
  'conv' (OIhw -> hwIO), 'conv1d' (OI1 -> IO), 'linear' (OI -> IO), 'copy'. None when absent."""
  *mod, leaf = module_path(torch_key)
  module = _lookup(params, mod)
  if not isinstance(module, Mapping):
    return None
  if leaf == 'bias':
    return (tuple(mod) + ('bias',), 'copy') if 'bias' in module else None
  if leaf != 'weight':  # an nn.Parameter held by name (OpenCLIP's text_projection, logit_scale)
    held = module.get(leaf)
    return (
      (tuple(mod) + (leaf,), 'copy') if held is not None and not isinstance(held, Mapping) else None
    )
  if 'scale' in module:
    return tuple(mod) + ('scale',), 'copy'
  if 'embedding' in module:
    return tuple(mod) + ('embedding',), 'copy'
  if 'kernel' in module:
    return tuple(mod) + ('kernel',), {4: 'conv', 2: 'linear'}.get(np.ndim(module['kernel']), 'x')
  return None


def torch_to_flax(array: np.ndarray, kind: str) -> np.ndarray:
  """Transform a torch tensor to the layout of the Flax leaf of ``kind`` (see flax_leaf_for)."""
  if kind == 'conv':
    return np.transpose(array, (2, 3, 1, 0))
  if kind == 'linear':
    if array.ndim == 3:  # Conv1d(k=1) stored as [O, I, 1]: the UNet AttentionBlock's qkv/proj_out
      array = array[:, :, 0]
    return array.T
  return array


def expected_flax_shape(torch_shape: Sequence[int], kind: str) -> tuple[int, ...]:
  return tuple(torch_to_flax(np.empty(tuple(torch_shape), np.int8), kind).shape)


class ConversionError(UserError):
  """Weights that cannot be converted; the message says which key and why."""


def _leaf_value(key: str, value: np.ndarray, kind, leaf, path) -> tuple:
  """(the torch tensor in Flax layout for ``leaf``, None) or (None, what does not fit)."""
  where = '/'.join(path)
  rank = {'conv': (4,), 'linear': (2, 3)}.get(kind)
  if rank is not None and value.ndim not in rank:
    return None, (
      f'{key}: {tuple(value.shape)} is a rank-{value.ndim} tensor, a {kind} weight of rank '
      f'{" or ".join(map(str, rank))} is expected (the model wants {tuple(leaf.shape)} '
      f'at {where})'
    )
  array = torch_to_flax(value, kind)
  if array.size == 1 and int(np.prod(leaf.shape)) == 1:  # a scalar stored as [1] or []
    array = array.reshape(leaf.shape)
  if tuple(array.shape) != tuple(leaf.shape):
    return None, (
      f'{key}: {tuple(np.shape(value))} -> {tuple(array.shape)}, the model wants '
      f'{tuple(leaf.shape)} at {where}'
    )
  return array, None


def _misfit_message(unmatched: list, bad_shape: list, missing: list, prefix: str) -> str:
  problems = []
  if unmatched:
    problems.append(
      f'{len(unmatched)} checkpoint keys have no place in the model: '
      + ', '.join(unmatched[:20])
      + (' ...' if len(unmatched) > 20 else '')
    )
  if bad_shape:
    problems.append('shape mismatches:\n    ' + '\n    '.join(bad_shape[:20]))
  if missing:
    problems.append(
      f'{len(missing)} model parameters not in the checkpoint (prefix {prefix!r}): '
      + ', '.join(missing[:20])
      + (' ...' if len(missing) > 20 else '')
    )
  return (
    'the checkpoint does not fit this model config:\n  '
    + '\n  '.join(problems)
    + '\nCheck that --config is the config of this '
    'checkpoint (configs/released/<name>.py for CompVis models).'
  )


def load_state_dict(
  template: Mapping,
  state_dict: Mapping[str, np.ndarray],
  prefix: str = '',
  ignore: Sequence[str] = (),
) -> dict:
  """Fill a Flax parameter tree shaped like ``template`` (arrays or ShapeDtypeStructs) from the
  torch tensors under ``prefix`` in ``state_dict`` (numpy arrays). Every key under the prefix must
  land on one leaf of the right shape and every leaf must be filled, else a ConversionError names
  the keys; keys starting with an entry of ``ignore`` (after the prefix) are skipped."""
  from flax.traverse_util import flatten_dict, unflatten_dict

  flat = flatten_dict(dict(template))
  out, unmatched, bad_shape, used_by = {}, [], [], {}
  for key in state_dict:  # (values read only for the keys under the prefix: LazyTensors)
    if not key.startswith(prefix):
      continue
    value = state_dict[key]
    name = key[len(prefix) :]
    if any(name.startswith(i) for i in ignore):
      continue
    found = flax_leaf_for(template, name)
    if found is None:
      unmatched.append(key)
      continue
    path, kind = found
    array, problem = _leaf_value(key, np.asarray(value), kind, flat[path], path)
    if problem:
      bad_shape.append(problem)
      continue
    if path in used_by:
      raise ConversionError(f'{key} and {used_by[path]} both map to {"/".join(path)}')
    used_by[path] = key
    out[path] = array.astype(getattr(flat[path], 'dtype', array.dtype), copy=False)
  missing = sorted('/'.join(p) for p in flat if p not in out)
  if unmatched or bad_shape or missing:
    raise ConversionError(_misfit_message(unmatched, bad_shape, missing, prefix))
  return unflatten_dict(out)
