"""Step grids of the fast solvers, as diffusers builds them (so that a trajectory equals its
scheduler's): inference timesteps by spacing ('linspace', 'leading', 'trailing'), the noise levels
sigma = sqrt((1 - abar) / abar) at them (interpolated linearly in t), Karras et al.'s rho = 7
sigmas, and sigma -> t by linear interpolation in log sigma. All numpy (float64), computed once
when a sampler is traced."""

from __future__ import annotations

import numpy as np

from ldm_jax.errors import UserError

SPACINGS = ('linspace', 'leading', 'trailing')


def train_sigmas(alphas_cumprod) -> np.ndarray:
  abar = np.asarray(alphas_cumprod, np.float64)
  return np.sqrt((1 - abar) / abar)


def spaced_timesteps(
  spacing: str, num_steps: int, num_timesteps: int, extra_last: bool = False
) -> np.ndarray:
  """Descending inference timesteps (float). ``extra_last``: the multistep solvers' variant, which
  spaces num_steps + 1 points and drops the last (DPMSolverMultistep, UniPCMultistep)."""
  if num_steps < 1:
    raise UserError(f'the number of sampling steps must be >= 1, got {num_steps}')
  if num_steps > num_timesteps:
    raise UserError(f'{num_steps} steps > {num_timesteps} diffusion timesteps')
  T, n = num_timesteps, num_steps
  if spacing == 'linspace':
    if extra_last:
      return np.linspace(0, T - 1, n + 1).round()[::-1][:-1].copy()
    return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].astype(np.float64)
  if spacing == 'leading':
    if extra_last:
      ratio = T // (n + 1)
      return (np.arange(0, n + 1) * ratio).round()[::-1][:-1] + 1.0
    ratio = T // n
    return (np.arange(0, n) * ratio).round()[::-1] + 1.0
  if spacing == 'trailing':
    return np.arange(T, 0, -T / n).round() - 1.0
  raise UserError(f'timestep spacing {spacing!r}: choose one of {SPACINGS}')


def karras_sigmas(sigma_max: float, sigma_min: float, num_steps: int, rho: float = 7.0):
  ramp = np.linspace(0, 1, num_steps)
  lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  return (hi + ramp * (lo - hi)) ** rho


def sigma_to_t(sigmas: np.ndarray, log_train_sigmas: np.ndarray) -> np.ndarray:
  """The (fractional) timestep of each sigma: linear in log sigma between training timesteps."""
  log = np.log(np.maximum(np.asarray(sigmas, np.float64), 1e-10))
  return np.interp(log, log_train_sigmas, np.arange(len(log_train_sigmas), dtype=np.float64))
