"""What one accelerator chip holds and computes, from the vendors' data sheets: HBM and dense peak
FLOP/s (bf16, and fp32 matmuls as the chips run them: TF32 on NVIDIA GPUs, bf16 passes on TPUs).
Used for MFU (benchmarks, ``python -m ldm_jax.aot``) and to say whether a program fits.

JAX devices are chips, except on TPU v4 (and v5p without megacore), whose two TensorCores can be
separate devices: ``device.num_cores`` tells, and a device gets its share of the chip."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
  kind: str  # a substring of jax's device_kind; the first match in CHIPS wins
  cores: int  # TensorCores per chip (TPU)
  hbm_gib: float
  bf16_tflops: float
  fp32_tflops: float
  hbm_gbps: float  # HBM bandwidth, GB/s


CHIPS = (
  Chip('H200', 1, 141, 989.4, 494.7, 4800),
  Chip('H100 PCIe', 1, 80, 756.0, 378.0, 2000),
  Chip('H100', 1, 80, 989.4, 494.7, 3350),
  Chip('A100-SXM4-80GB', 1, 80, 312.0, 156.0, 2039),
  Chip('A100', 1, 40, 312.0, 156.0, 1555),
  Chip('L4', 1, 24, 121.0, 60.0, 300),
  Chip('TPU v6 lite', 1, 32, 918.0, 918.0, 1640),  # v6e (Trillium)
  Chip('TPU v5 lite', 1, 16, 197.0, 197.0, 819),  # v5e
  Chip('TPU v5', 2, 95, 459.0, 459.0, 2765),  # v5p
  Chip('TPU v4', 2, 32, 275.0, 275.0, 1200),
)


def chip_of(device_kind: str) -> Chip | None:
  for chip in CHIPS:
    if chip.kind.lower() in device_kind.lower():
      return chip
  return None


def _share(chip: Chip, device_cores: int | None) -> float:
  """The fraction of a chip that one JAX device is."""
  return min(1.0, (device_cores or chip.cores) / chip.cores)


def peak_flops(
  device_kind: str, dtype: str, override_tflops: float = 0.0, device_cores: int | None = None
) -> float | None:
  """Dense peak FLOP/s of one device, or None for an unknown device (a CPU) unless
  ``override_tflops`` is given."""
  if override_tflops:
    return override_tflops * 1e12
  chip = chip_of(device_kind)
  if chip is None:
    return None
  tflops = chip.bf16_tflops if dtype == 'bfloat16' else chip.fp32_tflops
  return tflops * 1e12 * _share(chip, device_cores)


def hbm_bandwidth(device_kind: str, device_cores: int | None = None) -> float | None:
  """HBM bytes/s of one device, or None for an unknown device."""
  chip = chip_of(device_kind)
  if chip is None:
    return None
  return chip.hbm_gbps * 1e9 * _share(chip, device_cores)


def hbm_bytes(device_kind: str, device_cores: int | None = None) -> int | None:
  """HBM of one device in bytes, or None for an unknown device."""
  chip = chip_of(device_kind)
  if chip is None:
    return None
  return int(chip.hbm_gib * 2**30 * _share(chip, device_cores))
