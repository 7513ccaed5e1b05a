"""Samplers: pure functions of an eps function, x_T, a key and a (concrete) schedule.

The reference's DDIM, PLMS and DDPM, and the fast solvers of diffusers' names: DPM-Solver++ 2M,
3M and 2M SDE, UniPC (bh2, order 2 or 3), Euler, Euler ancestral and Heun. The solvers take a
timestep ``spacing`` ('linspace', 'leading', 'trailing'; diffusers' default 'linspace') and
``karras`` sigmas; each trajectory equals its diffusers scheduler (tests/test_solvers_diffusers.py).
"""

import dataclasses
import functools
from typing import Callable

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

GRIDS = ('reference', 'all', 'dpm', 'karras')


@dataclasses.dataclass(frozen=True)
class Sampler:
  """One sampler: its solver function (``fn(eps_fn, x_T, key, schedule, **kwargs)``) and what the
  rest of the code asks of it by record, never by name.

  ``grid``: the noise levels it walks: 'reference' (the reference's DDIM grid
  ``range(0, T, T // S) + 1``, which may hold more steps than asked), 'all' (every timestep:
  ddpm), 'dpm' (a fast solver's timestep grid of ``spacing``) or 'karras' (the Euler family's
  sigmas); ``extra_calls``: model calls beyond one per grid step (PLMS's warm-up: 1; Heun: one
  per step but the last); ``solver_options``: it takes ``spacing`` and ``karras``."""

  name: str
  fn: Callable
  grid: str = 'reference'
  extra_calls: Callable[[int], int] = lambda steps: 0
  solver_options: bool = False

  def __post_init__(self):
    if self.grid not in GRIDS:
      raise ValueError(f'sampler {self.name!r}: grid {self.grid!r} is not one of {GRIDS}')

  def grid_length(self, steps: int, num_timesteps: int = 1000) -> int:
    """The number of steps in its grid for ``steps``."""
    if self.grid == 'all':
      return num_timesteps
    if self.grid == 'reference':
      return len(make_ddim_timesteps(steps, num_timesteps))
    return steps

  def model_calls(self, steps: int, num_timesteps: int = 1000) -> int:
    """Model evaluations of ``steps`` steps."""
    return self.grid_length(steps, num_timesteps) + self.extra_calls(steps)

  def start_alpha_bar(
    self, schedule, steps: int, start: int, spacing: str = '', karras: bool = False
  ) -> float:
    """abar at the noise level where grid step ``start`` begins: image-to-image noises the init
    latent to it (x = sqrt(abar) z0 + sqrt(1 - abar) noise) and runs the grid from there."""
    abar = np.asarray(jax.device_get(schedule.alphas_cumprod), np.float64)
    T = len(abar)
    if self.grid == 'all':
      return float(abar[T - 1 - start])
    if self.grid == 'reference':
      return float(abar[make_ddim_timesteps(steps, T)[::-1][start]])
    grid = {'karras': karras_grid, 'dpm': dpm_grid}[self.grid]
    sigma = grid(schedule, steps, spacing or 'linspace', karras)[1][start]
    return float(1.0 / (1.0 + sigma**2))

  def steps_above(
    self, cutoff: float, schedule, steps: int, spacing: str = '', karras: bool = False
  ) -> int:
    """How many of its grid's steps are at timesteps >= ``cutoff`` (its first ones): where a run
    stops for diffusers' denoising_end, and where the next one starts for denoising_start."""
    T = schedule.num_timesteps
    if self.grid == 'all':
      t = np.arange(T)
    elif self.grid == 'reference':
      t = make_ddim_timesteps(steps, T)
    else:
      grid = {'karras': karras_grid, 'dpm': dpm_grid}[self.grid]
      t = grid(schedule, steps, spacing or 'linspace', karras)[0]
    return int(np.sum(np.asarray(t) >= cutoff))

  def kwargs(self, steps: int, eta: float, spacing: str = '', karras: bool = False) -> dict:
    """The solver's keyword arguments for these options; an option it does not take is a
    UserError naming it."""
    if (spacing or karras) and not self.solver_options:
      takes = ', '.join(n for n, s in SAMPLERS.items() if s.solver_options)
      raise UserError(
        f"--spacing and --karras choose the fast solvers' grids ({takes}); {self.name} runs "
        "the reference's grid"
      )
    if self.grid == 'all':
      return {}  # every timestep, at its own eta
    out = {'num_steps': steps, 'eta': eta}
    if self.solver_options:
      out.update(spacing=spacing or 'linspace', karras=karras)
    return out


def _register(*samplers: Sampler) -> dict[str, Sampler]:
  return {s.name: s for s in samplers}


# Adding a sampler: a module with its solver function, and one record here (CONTRIBUTING.md).
SAMPLERS = _register(
  Sampler('ddim', ddim_sample),
  Sampler('plms', plms_sample, extra_calls=lambda steps: 1),  # its warm-up step
  Sampler('ddpm', ddpm_sample, grid='all'),  # every timestep, eta 1 (its own)
  Sampler('dpmpp_2m', functools.partial(dpm_solver_sample, order=2), 'dpm', solver_options=True),
  Sampler('dpmpp_3m', functools.partial(dpm_solver_sample, order=3), 'dpm', solver_options=True),
  Sampler(
    'dpmpp_2m_sde',
    functools.partial(dpm_solver_sample, order=2, sde=True),
    'dpm',
    solver_options=True,
  ),
  Sampler('unipc', functools.partial(unipc_sample, order=2), 'dpm', solver_options=True),
  Sampler('unipc_3', functools.partial(unipc_sample, order=3), 'dpm', solver_options=True),
  Sampler('euler', euler_sample, 'karras', solver_options=True),
  Sampler(
    'euler_a', functools.partial(euler_sample, ancestral=True), 'karras', solver_options=True
  ),
  Sampler(
    'heun',
    functools.partial(euler_sample, heun=True),
    'karras',
    extra_calls=lambda steps: steps - 1,  # two evaluations per step but the last
    solver_options=True,
  ),
)
# The fast solvers (they take spacing and karras): name -> record.
SOLVERS = {name: s for name, s in SAMPLERS.items() if s.solver_options}


def get_sampler(name: str) -> Sampler:
  if name not in SAMPLERS:
    raise UserError(f'unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}')
  return SAMPLERS[name]


def grid_length(name: str, steps: int, num_timesteps: int = 1000) -> int:
  return get_sampler(name).grid_length(steps, num_timesteps)


def start_alpha_bar(
  name: str, schedule, steps: int, start: int, spacing: str = '', karras: bool = False
) -> float:
  return get_sampler(name).start_alpha_bar(schedule, steps, start, spacing, karras)


def model_calls(name: str, steps: int, num_timesteps: int = 1000) -> int:
  """Model evaluations of ``steps`` steps (see Sampler.model_calls)."""
  return get_sampler(name).model_calls(steps, num_timesteps)


__all__ = [
  'Sampler',
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
