"""Parameter trees: counting them, and random weights drawn with numpy (no XLA init to compile:
tests and benchmarks of large models start in seconds)."""

from __future__ import annotations

import jax
import numpy as np


def count_params(tree) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def random_params(tree, seed: int = 0):
  """Random float32 weights for a tree of ShapeDtypeStructs (``jax.eval_shape`` of an init):
  kernels ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1), biases and embeddings ~ N(0, 0.1)."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = getattr(path[-1], 'key', '')
    shape = leaf.shape
    if name == 'kernel':
      fan_in = int(np.prod(shape[:-1])) or 1
      return rng.normal(0, fan_in**-0.5, shape).astype(np.float32)
    if name == 'scale':
      return (1 + rng.normal(0, 0.1, shape)).astype(np.float32)
    return rng.normal(0, 0.1, shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, tree)
