"""Euler, Euler ancestral and Heun (Karras et al. 2022, Algorithm 1 without churn) on the model's
discrete noise levels, as diffusers' EulerDiscreteScheduler, EulerAncestralDiscreteScheduler and
HeunDiscreteScheduler ('linspace' spacing by default, optional Karras sigmas, final sigma 0).

They integrate dx/dsigma = eps in the variance-exploding space x_sigma = x / sqrt(abar) =
x * sqrt(1 + sigma^2): the sampler scales the variance-preserving x_T it is given into that space
(exactly, where diffusers' pipelines start at sigma_max instead of sqrt(1 + sigma_max^2)), calls
the model on x_sigma / sqrt(1 + sigma^2) at the (fractional) timestep of sigma, and returns x at
sigma 0. Model calls: S (Euler), 2S - 1 (Heun)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.samplers.ddim import EpsFn, run_steps
from ldm_jax.diffusion.samplers.grids import (
  karras_sigmas,
  sigma_to_t,
  spaced_timesteps,
  train_sigmas,
)
from ldm_jax.diffusion.schedule import Schedule


def karras_grid(
  schedule: Schedule, num_steps: int, spacing: str = 'linspace', karras: bool = False
):
  """(timesteps [S] (float), sigmas [S + 1] ending at 0)."""
  T = schedule.num_timesteps
  sig = train_sigmas(jax.device_get(schedule.alphas_cumprod))
  timesteps = spaced_timesteps(spacing, num_steps, T)
  sigmas = np.interp(timesteps, np.arange(T), sig)
  if karras:
    sigmas = karras_sigmas(sigmas[0], sigmas[-1], num_steps)
    timesteps = sigma_to_t(sigmas, np.log(sig))
  sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32).astype(np.float64)
  return timesteps.astype(np.float32), sigmas


def _model(eps_fn, x, sigma, t):
  """eps at x_sigma (the variance-exploding x) and noise level sigma, timestep t."""
  return eps_fn(x / jnp.sqrt(sigma**2 + 1), jnp.full((x.shape[0],), t, jnp.float32))


def euler_sample(
  eps_fn: EpsFn,
  x_T: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  num_steps: int,
  eta: float = 0.0,
  ancestral: bool = False,
  heun: bool = False,
  spacing: str = 'linspace',
  karras: bool = False,
  start: int = 0,
  stop: int | None = None,
) -> jax.Array:
  """Euler (``ancestral``: with fresh noise each step, eta = 1 in Karras' terms; ``heun``: the
  second-order correction on every step but the last) from x_T down ``num_steps`` noise levels;
  ``start``: from level ``start``, x_T being (variance preserving) at it (image-to-image);
  ``stop``: end at level ``stop``, the latents returned variance preserving at it."""
  del eta
  timesteps, sigmas = karras_grid(schedule, num_steps, spacing, karras)
  n_grid = len(timesteps)
  end = n_grid if stop is None else stop
  timesteps, sigmas = timesteps[start:], sigmas[start:]
  t_next = np.concatenate([timesteps[1:], timesteps[-1:]])
  keys = jax.random.split(key, len(timesteps))
  f32 = lambda a: jnp.asarray(a, jnp.float32)

  def step(x, inputs, correct: bool):
    t, tn, s, sn, k = inputs
    d = _model(eps_fn, x, s, t)  # dx/dsigma: the model's eps
    if ancestral:
      up = jnp.sqrt(sn**2 * (s**2 - sn**2) / s**2)
      down = jnp.sqrt(sn**2 - up**2)
      return x + d * (down - s) + jax.random.normal(k, x.shape, x.dtype) * up
    if not correct:
      return x + d * (sn - s)
    d2 = _model(eps_fn, x + d * (sn - s), sn, tn)
    return x + (d + d2) / 2 * (sn - s)

  xs = (f32(timesteps), f32(t_next), f32(sigmas[:-1]), f32(sigmas[1:]), keys)
  xs = run_steps(xs, start, stop)
  x = x_T * float(np.sqrt(1 + sigmas[0] ** 2))  # variance preserving -> exploding, at sigma_max
  to_vp = float(1 / np.sqrt(1 + sigmas[end - start] ** 2))  # 1 at the grid's end (sigma 0)
  if not heun:
    return jax.lax.scan(lambda x, i: (step(x, i, False), None), x, xs)[0] * to_vp
  if end < n_grid:  # stopped early: every step corrected
    return jax.lax.scan(lambda x, i: (step(x, i, True), None), x, xs)[0] * to_vp
  # Heun: corrected on every step but the last, which goes to sigma 0 (no model call there)
  head = jax.tree.map(lambda a: a[:-1], xs)
  x = jax.lax.scan(lambda x, i: (step(x, i, True), None), x, head)[0]
  return step(x, jax.tree.map(lambda a: a[-1], xs), False)
