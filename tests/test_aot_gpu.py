"""Compiling for NVIDIA GPUs without one (python -m ldm_jax.aot --topology=h100:1x8): the topology
names, the target configs, a clear error without JAX's CUDA plugin, and, where the plugin is
installed (pip install 'jax[cuda12]': 5.5 GB, so not in CI; run this file with it), the digits
LDM's training step compiled for one H100 with its memory and the CPU twin's counts."""

import importlib.util
import os
import subprocess
import sys

import pytest

from ldm_jax.aot import gpu, topology_devices
from ldm_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_PLUGIN = importlib.util.find_spec('jax_cuda12_plugin') is not None


def test_gpu_topologies_and_target_configs():
  assert gpu.parse('h100:1x8') == ('h100', 1, 8)
  assert gpu.parse('H200:2x8') == ('h200', 2, 8)
  assert gpu.parse('a100:4') == ('a100', 1, 4)
  assert gpu.parse('v5e:2x4') is None
  with pytest.raises(UserError, match='h100:HOSTSxGPUS'):
    gpu.parse('h100:1x2x3')
  text = gpu.target_config('h200')
  assert (
    'device_description_str: "NVIDIA H200"' in text and 'memory_bandwidth: 4800000000000' in text
  )
  assert 'cuda_compute_capability { major: 9 }' in text and 'core_count: 132' in text
  assert 'cuda_compute_capability { major: 8 }' in gpu.target_config('a100')


@pytest.mark.skipif(HAS_PLUGIN, reason='the CUDA plugin is installed here')
def test_without_the_cuda_plugin_the_error_says_what_to_install():
  with pytest.raises(UserError, match=r"pip install 'jax\[cuda12\]=="):
    topology_devices('h100:1x8')


@pytest.mark.skipif(not HAS_PLUGIN, reason="needs JAX's CUDA plugin (pip install 'jax[cuda12]')")
def test_the_digits_step_compiles_for_an_h100():
  import json

  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  r = subprocess.run(
    [sys.executable, '-m', 'ldm_jax.aot', '--config=configs/digits_ldm.py', '--topology=h100:1'],
    cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
  )  # fmt: skip
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.strip().splitlines()[-1])
  assert out['device_kind'] == 'NVIDIA H100 80GB HBM3' and out['devices'] == 1 and out['fits']
  assert out['peak_bytes'] > 0 and out['flops_per_device'] > 1e9
  assert out['time_model'].startswith('roofline') and 'estimates' in out['note']
  assert out['sampling']['est_seconds'] > 0
