"""NVIDIA GPUs as compile targets without a GPU: ``--topology=h100:1x8`` (hosts x GPUs per host).

JAX's CUDA plugin (``pip install 'jax[cuda12]'``, the same version as jax; about 5.5 GB with the
NVIDIA libraries; no GPU or driver needed) makes the devices of a described topology
(``jax.experimental.topologies.get_topology_desc(platform='cuda', topology='1xHxG',
target_config=...)``, openxla/xla#16913), and XLA compiles for them: the programs, their memory
per GPU, the collectives. The target config is the device description XLA's GPU compiler reads
(``GpuTargetConfig``): the H100 SXM and A100 SXM 80 GB ones are XLA's published specs
(xla/tools/hlo_opt/gpu_specs); the H200 is the H100's compute with its 141 GB and 4.8 TB/s.

XLA gives no cost analysis for these compiled programs (``cost_analysis()`` is None), so the FLOPs
and bytes are those of the same program compiled for as many CPU devices (the same sharding and
per-device shapes: see ``ldm_jax.aot.report``), and the time is the roofline of those counts against
the GPU's peak and HBM bandwidth (``parallel.chips``): estimates, labelled so."""

from __future__ import annotations

from ldm_jax.errors import UserError

_COMMON = dict(
  threads_per_block_limit=1024,
  threads_per_warp=32,
  shared_memory_per_block=49152,
  threads_per_core_limit=2048,
  block_dim_limit_x=2147483647,
  block_dim_limit_y=65535,
  block_dim_limit_z=65535,
  registers_per_core_limit=65536,
  registers_per_block_limit=65536,
)
_H100 = dict(
  shared_memory_per_core=233472,
  core_count=132,
  fpus_per_core=128,
  memory_bandwidth=3352320000000,
  l2_cache_size=52428800,
  clock_rate_ghz=1.98,
  device_memory_size=84978434048,
  shared_memory_per_block_optin=232448,
)
TARGETS = {
  'h100': ('NVIDIA H100 80GB HBM3', 9, _H100),
  'h200': (
    'NVIDIA H200',
    9,
    {**_H100, 'memory_bandwidth': 4800000000000, 'device_memory_size': 150754820096},
  ),
  'a100': (
    'NVIDIA A100-SXM4-80GB',
    8,
    dict(
      shared_memory_per_core=167936,
      core_count=108,
      fpus_per_core=64,
      memory_bandwidth=2039040000000,
      l2_cache_size=41943040,
      clock_rate_ghz=1.41,
      device_memory_size=85100068864,
      shared_memory_per_block_optin=166912,
    ),
  ),
}


def target_config(kind: str) -> str:
  """The GpuTargetConfig text proto of a GPU ``kind`` ('h100', 'h200', 'a100')."""
  name, major, fields = TARGETS[kind]
  lines = [f'  {k}: {v}' for k, v in {**_COMMON, **fields}.items()]
  lines.append(f'  cuda_compute_capability {{ major: {major} }}')
  body = '\n'.join(lines)
  return (
    f'gpu_device_info {{\n{body}\n}}\nplatform_name: "CUDA"\ndevice_description_str: "{name}"\n'
  )


def parse(topology: str) -> tuple[str, int, int] | None:
  """'h100:1x8' -> ('h100', 1 host, 8 GPUs each); 'h100:8' is one host; None if not a GPU."""
  kind, _, shape = topology.lower().partition(':')
  if kind not in TARGETS:
    return None
  parts = shape.split('x') if shape else ['1']
  if len(parts) == 1:
    parts = ['1', parts[0]]
  if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise UserError(f'--topology={topology!r}: name GPUs as {kind}:HOSTSxGPUS, e.g. {kind}:1x8')
  return kind, int(parts[0]), int(parts[1])


def gpu_devices(topology: str):
  """The devices of a GPU topology ('h100:1x8'), compiled for without a GPU."""
  import jax
  from jax.experimental import topologies

  kind, hosts, per_host = parse(topology)
  try:
    desc = topologies.get_topology_desc(
      platform='cuda', topology=f'1x{hosts}x{per_host}', target_config=target_config(kind)
    )
  except Exception as e:  # pylint: disable=broad-except  (no CUDA plugin, an old jaxlib)
    raise UserError(
      f'cannot make GPU topology {topology!r}: {type(e).__name__}: {str(e)[:300]}\n'
      f"Install JAX's CUDA plugin (no GPU needed): pip install 'jax[cuda12]=={jax.__version__}'"
    ) from None
  return desc.devices
