"""Samplers: pure functions of an eps function, x_T, a key and a (concrete) schedule.

The reference's DDIM, PLMS and DDPM, and the fast solvers of diffusers' names: DPM-Solver++ 2M,
3M and 2M SDE, UniPC (bh2, order 2 or 3), Euler, Euler ancestral and Heun. The solvers take a
timestep ``spacing`` ('linspace', 'leading', 'trailing'; diffusers' default 'linspace') and
``karras`` sigmas; each trajectory equals its diffusers scheduler (tests/test_solvers_diffusers.py).
"""

import functools

import jax
import numpy as np

from ldm_jax.diffusion.samplers.ddim import ddim_sample, make_ddim_timesteps
from ldm_jax.diffusion.samplers.ddpm import ddpm_sample
from ldm_jax.diffusion.samplers.dpm_solver import dpm_grid, dpm_solver_sample
from ldm_jax.diffusion.samplers.guidance import guided_eps_fn
from ldm_jax.diffusion.samplers.karras import euler_sample, karras_grid
from ldm_jax.diffusion.samplers.plms import plms_sample
from ldm_jax.diffusion.samplers.unipc import unipc_sample
from ldm_jax.errors import UserError

# name -> (function, model calls for S steps)
SOLVERS = {
  'dpmpp_2m': (functools.partial(dpm_solver_sample, order=2), lambda s: s),
  'dpmpp_3m': (functools.partial(dpm_solver_sample, order=3), lambda s: s),
  'dpmpp_2m_sde': (functools.partial(dpm_solver_sample, order=2, sde=True), lambda s: s),
  'unipc': (functools.partial(unipc_sample, order=2), lambda s: s),
  'unipc_3': (functools.partial(unipc_sample, order=3), lambda s: s),
  'euler': (euler_sample, lambda s: s),
  'euler_a': (functools.partial(euler_sample, ancestral=True), lambda s: s),
  'heun': (functools.partial(euler_sample, heun=True), lambda s: 2 * s - 1),
}
SAMPLERS = {
  'ddim': ddim_sample,
  'plms': plms_sample,
  'ddpm': ddpm_sample,
  **{name: fn for name, (fn, _) in SOLVERS.items()},
}


def get_sampler(name: str):
  if name not in SAMPLERS:
    raise UserError(f'unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}')
  return SAMPLERS[name]


def grid_length(name: str, steps: int, num_timesteps: int = 1000) -> int:
  """The number of steps in the sampler's grid for ``steps`` (the reference's DDIM/PLMS grid may
  hold more than asked; ddpm all T)."""
  if name in SOLVERS:
    return steps
  if name == 'ddpm':
    return num_timesteps
  return len(make_ddim_timesteps(steps, num_timesteps))


def start_alpha_bar(
  name: str, schedule, steps: int, start: int, spacing: str = '', karras: bool = False
) -> float:
  """abar at the noise level where the sampler's grid step ``start`` begins: image-to-image noises
  the init latent to it (x = sqrt(abar) z0 + sqrt(1 - abar) noise) and runs the grid from there."""
  abar = np.asarray(jax.device_get(schedule.alphas_cumprod), np.float64)
  T = len(abar)
  if name == 'ddpm':
    return float(abar[T - 1 - start])
  if name in ('ddim', 'plms'):
    return float(abar[make_ddim_timesteps(steps, T)[::-1][start]])
  grid = karras_grid if name in ('euler', 'euler_a', 'heun') else dpm_grid
  sigma = grid(schedule, steps, spacing or 'linspace', karras)[1][start]
  return float(1.0 / (1.0 + sigma**2))


def model_calls(name: str, steps: int, num_timesteps: int = 1000) -> int:
  """Model evaluations of ``steps`` steps: the solvers' own count (Heun 2S - 1), the reference's
  DDIM/PLMS grid (which may realise more steps than asked; PLMS one more for its warm-up), all T
  for ddpm."""
  if name in SOLVERS:
    return SOLVERS[name][1](steps)
  if name == 'ddpm':
    return num_timesteps
  return len(make_ddim_timesteps(steps, num_timesteps)) + (name == 'plms')


__all__ = [
  'SAMPLERS',
  'SOLVERS',
  'get_sampler',
  'model_calls',
  'grid_length',
  'start_alpha_bar',
  'ddim_sample',
  'plms_sample',
  'ddpm_sample',
  'dpm_solver_sample',
  'unipc_sample',
  'euler_sample',
  'guided_eps_fn',
  'make_ddim_timesteps',
]
