"""Classifier-free guidance (Ho & Salimans), batched as the reference's DDIM sampler does it."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers.ddim import EpsFn

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]  # (x, t, cond) -> eps


def guided_eps_fn(model_fn: ModelFn, cond: Any, uncond: Any = None, scale: float = 1.0) -> EpsFn:
  """eps = e_u + s (e_c - e_u) from one model call on [x, x] with conditioning [uncond, cond]
  (unconditional first). With scale 1 (or no uncond) a single conditional call."""
  if uncond is None or scale == 1.0:
    return lambda x, t: model_fn(x, t, cond)

  def eps_fn(x, t):
    both = jax.tree.map(lambda u, c: jnp.concatenate([u, c]), uncond, cond)
    e_u, e_c = jnp.split(model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both), 2)
    return e_u + scale * (e_c - e_u)

  return eps_fn
