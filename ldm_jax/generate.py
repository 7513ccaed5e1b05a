"""Sampling images from a latent diffusion model: one jitted function, the step loop inside JAX."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ldm_jax.models import LatentDiffusion
from ldm_jax.samplers import get_sampler, guided_eps_fn


def make_generate_fn(ldm: LatentDiffusion, latent_shape, *, sampler: str = 'ddim', steps: int = 50,
                     eta: float = 0.0, guidance_scale: float = 1.0, null_label: int = -1) -> Callable:
  """Returns generate(params, first_stage_params, scale_factor, labels, key) -> images in [-1, 1]
  of shape [B, H, W, C], B = len(labels) (labels is ignored, but sets B, when unconditional).

  Classifier-free guidance (scale != 1) needs a class-conditional model with a null class."""
  sample_fn = get_sampler(sampler)
  guided = guidance_scale != 1.0
  if guided and (ldm.cond_stage is None or null_label < 0):
    raise ValueError('classifier-free guidance needs a class-conditional model trained with a null '
                     'class (config.cond_stage.null_label >= 0); use guidance_scale=1')
  conditional = ldm.cond_stage is not None

  def generate(params, first_stage_params, scale_factor, labels, key):
    model_fn = lambda x, t, c: ldm.eps(params, x, t, c if conditional else None)
    uncond = jnp.full_like(labels, null_label) if guided else None
    eps_fn = guided_eps_fn(model_fn, labels, uncond, guidance_scale)
    k_init, k_sample = jax.random.split(key)
    x_T = jax.random.normal(k_init, (labels.shape[0],) + tuple(latent_shape), jnp.float32)
    kwargs = {} if sampler == 'ddpm' else {'num_steps': steps, 'eta': eta}
    z = sample_fn(eps_fn, x_T, k_sample, ldm.schedule, **kwargs)
    return ldm.decode(first_stage_params, z, scale_factor)

  return jax.jit(generate)


def to_uint8(images) -> jax.Array:
  """[-1, 1] -> uint8 [0, 255], rounded and clamped."""
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
