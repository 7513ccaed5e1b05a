"""Shared by the benchmarks: random model weights of a config, dense peak FLOP/s of one
accelerator for MFU (bf16, and fp32 matmuls as GPUs run them, TF32; from the vendors' data
sheets), significant-digit rounding."""

from __future__ import annotations

# (substring of jax's device_kind, bf16 TFLOP/s, fp32/TF32 TFLOP/s); the first match wins.
PEAK_TFLOPS = (
  ('H200', 989.4, 494.7),
  ('H100 PCIe', 756.0, 378.0),
  ('H100', 989.4, 494.7),
  ('A100', 312.0, 156.0),
  ('L4', 121.0, 60.0),
  ('TPU v6', 918.0, 918.0),
  ('TPU v5p', 459.0, 459.0),
  ('TPU v5', 197.0, 197.0),
  ('TPU v4', 275.0, 275.0),
)


def peak_flops(device_kind: str, dtype: str, override_tflops: float = 0.0) -> float | None:
  """FLOP/s, or None for an unknown device (a CPU) unless ``override_tflops`` is given."""
  if override_tflops:
    return override_tflops * 1e12
  for name, bf16, fp32 in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return (bf16 if dtype == 'bfloat16' else fp32) * 1e12
  return None


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
