"""DDIM (reference: ldm/models/diffusion/ddim.py), with the reference's timestep grid and alphas."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.schedule import Schedule
from ldm_jax.errors import UserError

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t [B,H,W,C], t [B] int32) -> eps


def make_ddim_timesteps(
  num_steps: int, num_timesteps: int = 1000, method: str = 'uniform'
) -> np.ndarray:
  """The reference grid, +1 offset included: 'uniform' is range(0, T, T // S) + 1, e.g. S=50 ->
  [1, 21, ..., 981]. Integer division means S=400 really runs 500 steps (T // 400 = 2)."""
  if num_steps < 1:
    raise UserError(f'the number of sampling steps must be >= 1, got {num_steps}')
  if method == 'uniform':
    if num_steps > num_timesteps:
      raise UserError(f'{num_steps} DDIM steps > {num_timesteps} diffusion timesteps')
    steps = np.arange(0, num_timesteps, num_timesteps // num_steps) + 1
  elif method == 'quad':
    steps = (np.linspace(0, np.sqrt(num_timesteps * 0.8), num_steps) ** 2).astype(int) + 1
  else:
    raise ValueError(f"DDIM discretisation must be 'uniform' or 'quad', got {method!r}")
  if steps[-1] >= num_timesteps:
    below = max(s for s in range(1, num_steps) if _uniform_fits(s, num_timesteps))
    above = [s for s in range(num_steps + 1, num_timesteps + 1) if _uniform_fits(s, num_timesteps)]
    raise UserError(
      f'{num_steps} DDIM steps put timestep {steps[-1]} on the grid, past the last one '
      f"({num_timesteps - 1}): the reference's +1 offset (latent-diffusion issue #136). Use "
      f'{below} steps' + (f' or {above[0]}' if above else '') + ', or the ddpm sampler for all '
      f'{num_timesteps} steps.'
    )
  return steps.astype(np.int64)


def _uniform_fits(num_steps: int, num_timesteps: int) -> bool:
  """Whether the reference's uniform grid of ``num_steps`` stays inside [1, T - 1]."""
  stride = num_timesteps // num_steps
  return (num_timesteps - 1) // stride * stride + 1 < num_timesteps


def ddim_parameters(schedule: Schedule, timesteps: np.ndarray, eta: float):
  """(a_t, a_prev, sigma) per grid step, ascending. a_prev of the first step is abar[0], not 1."""
  abar = np.asarray(jax.device_get(schedule.alphas_cumprod), np.float64)
  a_t = abar[timesteps]
  a_prev = np.concatenate([abar[:1], abar[timesteps[:-1]]])
  sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
  return a_t.astype(np.float32), a_prev.astype(np.float32), sigma.astype(np.float32)


def ddim_update(x, eps, a_t, a_prev, sigma, noise):
  """One DDIM step: x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma noise."""
  x0_hat = (x - jnp.sqrt(1 - a_t) * eps) / jnp.sqrt(a_t)
  direction = jnp.sqrt(1 - a_prev - sigma**2) * eps
  return jnp.sqrt(a_prev) * x0_hat + direction + sigma * noise, x0_hat


def ddim_sample(
  eps_fn: EpsFn,
  x_T: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  num_steps: int,
  eta: float = 0.0,
  method: str = 'uniform',
  start: int = 0,
  stop: int | None = None,
) -> jax.Array:
  """Run DDIM from x_T down the grid; returns the last x_prev (as the reference). ``schedule`` must
  be concrete (close over it when jitting). ``start``: skip the grid's first (noisiest) steps,
  x_T being at the noise level of step ``start`` (image-to-image); ``stop``: end before grid step
  ``stop``, returning the latents at its noise level (diffusers' denoising_end)."""
  timesteps = make_ddim_timesteps(num_steps, schedule.num_timesteps, method)
  a_t, a_prev, sigma = ddim_parameters(schedule, timesteps, eta)
  keep = len(timesteps) - start  # the grid is ascending here: the last `keep` steps run
  timesteps, a_t, a_prev, sigma = (a[:keep] for a in (timesteps, a_t, a_prev, sigma))
  keys = jax.random.split(key, len(timesteps))
  batch = x_T.shape[0]

  def body(x, inputs):
    t, at, ap, sig, k = inputs
    eps = eps_fn(x, jnp.full((batch,), t, jnp.int32))
    noise = jax.random.normal(k, x.shape, x.dtype) if eta > 0 else jnp.zeros_like(x)
    x_prev, _ = ddim_update(x, eps, at, ap, sig, noise)
    return x_prev, None

  xs = tuple(jnp.asarray(a[::-1]) for a in (timesteps.astype(np.int32), a_t, a_prev, sigma)) + (
    keys,
  )
  x, _ = jax.lax.scan(body, x_T, run_steps(xs, start, stop))
  return x


def run_steps(xs, start: int, stop: int | None):
  """The scan inputs of grid steps [start, stop) (``xs`` holds those from ``start`` on)."""
  if stop is None:
    return xs
  if not start <= stop:
    raise ValueError(f'the sampler stops at grid step {stop}, before it starts ({start})')
  return jax.tree.map(lambda a: a[: stop - start], xs)
