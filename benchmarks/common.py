"""Shared by the benchmarks: random model weights of a config, dense peak FLOP/s of one
accelerator for MFU (ldm_jax.parallel.chips), significant-digit rounding, XLA cost and memory of a
compiled program, device peak memory, timed calls."""

from __future__ import annotations

import time

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


def xla_cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0)) if cost else 0.0
  out = {'xla_flops_per_device': flops or None}  # SPMD programs: one device's share
  try:
    m = compiled.memory_analysis()
    out['xla_memory_gb'] = round(
      (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
      )
      / 2**30,
      3,
    )
  except Exception:  # pylint: disable=broad-except  # not every backend has it
    out['xla_memory_gb'] = None
  return out


def device_peak_gb():
  import jax

  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return round(peak / 2**30, 3) if peak else None


def time_calls(fn, iters: int) -> list[float]:
  """Seconds per call, each call synchronised (fn must block on its result)."""
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times
