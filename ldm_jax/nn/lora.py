"""Low-rank adapters (LoRA, Hu et al. 2021) of a parameter tree: which layers get one, their
parameters, and the merged weights they give.

An adapter of a layer with kernel W ([in, out] for a linear layer, [kh, kw, in, out] for a
convolution: LoCon) is ``{'lora_a': A, 'lora_b': B}`` with A [..., in, rank] and B [rank, out], and
the layer computes with W + (alpha / rank) x A @ B (for a convolution: A is a kh x kw convolution to
``rank`` channels, B a 1 x 1 convolution), which is PEFT's LoraLayer without dropout, in our layout
(PEFT's lora_A.weight is A transposed, lora_B.weight is B transposed). A is drawn as PEFT draws it
(Kaiming-uniform, bound 1/sqrt(fan_in)) and B is zero, so a fresh adapter changes nothing.

Adapters live in a tree of the same nesting as the parameters: ``lora['unet'][...]['to_q']`` is
the adapter of ``params['unet'][...]['to_q']['kernel']``."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
from flax import traverse_util

from ldm_jax.config.adapters import TARGETS


def target_layers(params: dict, targets) -> dict[tuple, tuple]:
  """{layer path (a tuple of keys): its kernel's shape} of the layers ``targets`` select."""
  pattern = re.compile('|'.join(f'(?:{TARGETS[t]})' for t in targets))
  flat = traverse_util.flatten_dict(params)
  return {
    path[:-1]: tuple(leaf.shape)
    for path, leaf in flat.items()
    if path[-1] == 'kernel' and pattern.match('/'.join(path[:-1]))
  }


def init_adapters(key, layers: dict[tuple, tuple], rank: int) -> dict:
  """Fresh adapters (A Kaiming-uniform as PEFT's, B zero) of ``layers`` (target_layers)."""
  flat = {}
  for i, (path, shape) in enumerate(sorted(layers.items())):
    fan_in = 1
    for n in shape[:-1]:
      fan_in *= n
    bound = 1.0 / fan_in**0.5
    a_shape, b_shape = (*shape[:-1], rank), (rank, shape[-1])
    k = jax.random.fold_in(key, i)
    flat[(*path, 'lora_a')] = jax.random.uniform(k, a_shape, jnp.float32, -bound, bound)
    flat[(*path, 'lora_b')] = jnp.zeros(b_shape, jnp.float32)
  return traverse_util.unflatten_dict(flat)


def scaling(config) -> float:
  """alpha / rank of config.lora (alpha 0: the rank, a scaling of 1)."""
  return (config.lora.alpha or config.lora.rank) / config.lora.rank


def delta(a, b, scaling: float):
  """scaling x A @ B in the kernel's layout."""
  return scaling * jnp.einsum('...ir,ro->...io', a, b)


def merge(params: dict, adapters: dict, scaling: float) -> dict:
  """``params`` with every adapter's update added to its layer's kernel (traceable: gradients
  flow to the adapters; the rest of ``params`` is passed through)."""
  flat = traverse_util.flatten_dict(params)
  ad = traverse_util.flatten_dict(adapters)
  for path in {p[:-1] for p in ad}:
    kernel = flat[(*path, 'kernel')]
    d = delta(ad[(*path, 'lora_a')], ad[(*path, 'lora_b')], scaling)
    flat[(*path, 'kernel')] = kernel + d.astype(kernel.dtype)
  return traverse_util.unflatten_dict(flat)


def count(adapters: dict) -> int:
  return sum(x.size for x in jax.tree.leaves(adapters))
