"""Shared by the benchmarks: random model weights of a config, dense peak FLOP/s of one
accelerator for MFU (ldm_jax.parallel.chips), significant-digit rounding."""

from __future__ import annotations

from ldm_jax.parallel.chips import peak_flops  # noqa: F401  (re-exported for run.py)


def sig(x: float, digits: int = 4) -> float:
  """``x`` rounded to ``digits`` significant digits (CPU rates are small, GPU rates large)."""
  return float(f'{x:.{digits}g}')


def random_weights(config, ldm=None):
  """(LDM params, first-stage params) of the config's shapes, random (``nn.params.random_params``):
  speed does not depend on the values, and numpy draws skip the initialisers' compile."""
  from ldm_jax.latent_diffusion import abstract_params
  from ldm_jax.nn.params import random_params

  shapes = abstract_params(config)
  params = {k: shapes[k] for k in ('unet', 'cond_stage') if shapes[k] is not None}
  return random_params(params, 0), random_params(shapes['first_stage'], 1)
