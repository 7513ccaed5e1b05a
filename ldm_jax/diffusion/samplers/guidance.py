"""Classifier-free guidance (Ho & Salimans), batched as the reference's DDIM sampler does it."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.samplers.ddim import EpsFn

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]  # (x, t, cond) -> eps


def guided_eps_fn(
  model_fn: ModelFn, cond: Any, uncond: Any = None, scale: float = 1.0, rescale: float = 0.0
) -> EpsFn:
  """eps = e_u + s (e_c - e_u) from one model call on [x, x] with conditioning [uncond, cond]
  (unconditional first). With scale 1 (or no uncond) a single conditional call. ``rescale``:
  Lin et al.'s guidance rescale (``rescale_guidance``) with that phi."""
  if uncond is None or scale == 1.0:
    return lambda x, t: model_fn(x, t, cond)

  def eps_fn(x, t):
    both = jax.tree.map(lambda u, c: jnp.concatenate([u, c]), uncond, cond)
    e_u, e_c = jnp.split(model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both), 2)
    guided = e_u + scale * (e_c - e_u)
    return rescale_guidance(guided, e_c, rescale) if rescale else guided

  return eps_fn


def rescale_guidance(guided: jax.Array, cond_out: jax.Array, phi: float) -> jax.Array:
  """Lin et al. (2024) eq. 15-16 (diffusers' ``rescale_noise_cfg``): the guided prediction scaled
  to the conditional one's per-sample std, mixed back with weight ``phi``, against the
  over-exposure of strong guidance. Applied to the model's own output (v for v models)."""
  axes = tuple(range(1, guided.ndim))
  std_c = jnp.std(cond_out, axis=axes, keepdims=True, ddof=1)
  std_g = jnp.std(guided, axis=axes, keepdims=True, ddof=1)
  return phi * (guided * (std_c / std_g)) + (1.0 - phi) * guided
