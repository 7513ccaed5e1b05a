"""Sampling images from a latent diffusion model: one jitted function, the step loop inside JAX."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ldm_jax.models import LatentDiffusion
from ldm_jax.samplers import get_sampler, guided_eps_fn
from ldm_jax.samplers.tiling import tiled_decode, tiled_model_fn


def make_generate_fn(ldm: LatentDiffusion, *, sampler: str = 'ddim', steps: int = 50,
                     eta: float = 0.0, guidance_scale: float = 1.0, tile: int = 0,
                     tile_stride: int = 0) -> Callable:
  """Returns generate(params, first_stage_params, scale_factor, x_T, cond, uncond, key) -> images
  in [-1, 1], [B, f*h, f*w, 3] for the starting noise x_T [B, h, w, c] (its size sets the canvas).

  ``cond`` is the raw condition of the model's kind (``LatentDiffusion`` docstring; None when
  unconditional); it is encoded once, not per step. Classifier-free guidance (scale != 1) mixes
  in ``uncond`` (e.g. the null class or the empty prompt), batched as the reference does.

  ``tile`` > 0: latents larger than tile x tile are denoised and decoded in overlapping tiles
  (stride ``tile_stride``, default tile // 2), blended (``samplers.tiling``; the reference's
  split_input_params, e.g. tile 128 / stride 64 for super-resolution of large images)."""
  sample_fn = get_sampler(sampler)
  guided = guidance_scale != 1.0
  kwargs = {} if sampler == 'ddpm' else {'num_steps': steps, 'eta': eta}

  def generate(params, first_stage_params, scale_factor, x_T, cond, uncond, key):
    c = ldm.conditioning(params, first_stage_params, cond)
    u = ldm.conditioning(params, first_stage_params, uncond) if guided else None
    model_fn = lambda x, t, cc: ldm.eps(params, x, t, cc)
    tiled = tile > 0 and max(x_T.shape[1:3]) > tile
    stride = tile_stride or max(1, tile // 2)
    if tiled:
      model_fn = tiled_model_fn(model_fn, tile, stride)
    eps_fn = guided_eps_fn(model_fn, c, u, guidance_scale)
    z = sample_fn(eps_fn, x_T, key, ldm.schedule, **kwargs)
    if tiled:
      return tiled_decode(lambda zt: ldm.decode(first_stage_params, zt, scale_factor), z, tile,
                          stride, ldm.first_stage.downsample_factor)
    return ldm.decode(first_stage_params, z, scale_factor)

  return jax.jit(generate)


def to_uint8(images) -> jax.Array:
  """[-1, 1] -> uint8 [0, 255], rounded and clamped."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
