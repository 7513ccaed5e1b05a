"""How CompVis PyTorch state-dict keys map onto ldm_jax parameter trees.

Rule: split the key at dots, fold every numeric segment into the segment before it
(``input_blocks.4.1.qkv`` -> ``input_blocks_4_1/qkv``), and rename the leaf: ``weight`` becomes
``kernel`` (Conv/Linear, transposed), ``scale`` (GroupNorm/LayerNorm) or ``embedding`` (nn.Embedding)
by what the Flax module holds; ``bias`` stays. The converters and the architecture tests use this.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


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
  if leaf != 'weight':
    return None
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
