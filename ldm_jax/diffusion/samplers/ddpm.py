"""Ancestral DDPM sampling over all T steps (reference: DDPM.p_sample_loop)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.gaussian import predict_start_from_noise, q_posterior
from ldm_jax.diffusion.samplers.ddim import EpsFn, run_steps
from ldm_jax.diffusion.schedule import Schedule
from ldm_jax.errors import UserError


def ddpm_sample(
  eps_fn: EpsFn,
  x_T: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  num_steps: int | None = None,
  eta: float = 1.0,
  clip_denoised: bool = False,
  start: int = 0,
  stop: int | None = None,
) -> jax.Array:
  """x_{t-1} = mean(x0_hat, x_t) + [t > 0] exp(0.5 log var_t) z for t = T-1 .. 0. LatentDiffusion
  forces clip_denoised=False. ``num_steps`` must be T if given; ``eta`` must be 1. ``start``: from
  t = T - 1 - start (image-to-image); ``stop``: before t = T - 1 - stop."""
  T = schedule.num_timesteps
  if num_steps not in (None, T):
    raise UserError(f'ddpm sampling runs all {T} steps; got steps={num_steps} (use ddim or plms)')
  if eta != 1.0:
    raise UserError('ddpm sampling is ancestral (eta = 1); use ddim for other eta')
  batch = x_T.shape[0]

  def body(x, inputs):
    t, k = inputs
    tv = jnp.full((batch,), t, jnp.int32)
    x0 = predict_start_from_noise(schedule, x, tv, eps_fn(x, tv))
    if clip_denoised:
      x0 = jnp.clip(x0, -1.0, 1.0)
    mean, _, logvar = q_posterior(schedule, x0, x, tv)
    noise = jax.random.normal(k, x.shape, x.dtype)
    return mean + (t > 0) * jnp.exp(0.5 * logvar) * noise, None

  xs = (jnp.arange(T - 1 - start, -1, -1, dtype=jnp.int32), jax.random.split(key, T - start))
  x, _ = jax.lax.scan(body, x_T, run_steps(xs, start, stop))
  return x
