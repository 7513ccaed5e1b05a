"""Samplers: pure functions of an eps function, x_T, a key and a (concrete) schedule."""

from ldm_jax.errors import UserError
from ldm_jax.diffusion.samplers.ddim import ddim_sample, make_ddim_timesteps
from ldm_jax.diffusion.samplers.ddpm import ddpm_sample
from ldm_jax.diffusion.samplers.guidance import guided_eps_fn
from ldm_jax.diffusion.samplers.plms import plms_sample

SAMPLERS = {'ddim': ddim_sample, 'plms': plms_sample, 'ddpm': ddpm_sample}


def get_sampler(name: str):
  if name not in SAMPLERS:
    raise UserError(f'unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}')
  return SAMPLERS[name]


__all__ = [
  'SAMPLERS',
  'get_sampler',
  'ddim_sample',
  'plms_sample',
  'ddpm_sample',
  'guided_eps_fn',
  'make_ddim_timesteps',
]
