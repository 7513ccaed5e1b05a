"""The benchmark harness in its CI-sized form (a shrunk model on the CPU), and the diffusers
comparison's architectures: the same parameter counts as ours."""

import json

import jax
import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_smoke_run_reports_every_measurement_with_the_diffusers_ratio():
  r = run_cli('benchmarks/run.py', '--smoke', '--compare_diffusers', timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{')]
  ours = {d['what']: d for d in lines if 'framework' not in d}
  theirs = {d['what']: d for d in lines if 'framework' in d}
  names = {'train', 'sample_ddim2', 'first_stage_encode', 'first_stage_decode'}
  assert set(ours) == names and set(theirs) == names
  train = ours['train']
  for d in lines:
    assert d['images_per_s'] > 0 and d['date'] and d['device'] and d['command']
  assert train['batch'] == 8 and train['compile_s'] > 0 and train['step_time_s'] > 0
  # forward + backward ~ 3 forwards; XLA's count of the whole step (per device: the batch is
  # split, the replicated optimizer and EMA update are not) adds the update
  xla = train['xla_flops_per_device'] * train['num_devices']
  assert 0.8 < xla / train['model_flops_per_step'] < 2.0
  assert train['mfu'] is None  # no peak for a CPU unless --peak_tflops
  assert ours['sample_ddim2']['unet_evaluations'] == 2
  for name in names:
    assert ours[name]['speedup_vs_diffusers'] == pytest.approx(
      ours[name]['images_per_s'] / theirs[name]['images_per_s'], rel=1e-2
    )
  assert theirs['train']['unet_params'] == train['unet_params']


def test_diffusers_models_of_the_churches_config_have_our_parameter_counts():
  import diffusers
  import jax.numpy as jnp

  from benchmarks.diffusers_compare import unet_kwargs, vae_kwargs
  from ldm_jax.configs import lsun_churches
  from ldm_jax.latent_diffusion import LatentDiffusion, build_first_stage, latent_shape
  from ldm_jax.nn.params import count_params

  c = lsun_churches.get_config()
  ldm = LatentDiffusion.from_config(c)
  key = jax.random.PRNGKey(0)
  ours = jax.eval_shape(lambda k: ldm.init_params(k, latent_shape(c)), key)['unet']
  fs = jax.eval_shape(
    lambda k: build_first_stage(c.first_stage).init(k, jnp.zeros((1, 256, 256, 3)))['params'], key
  )
  count = lambda m: sum(p.numel() for p in m.parameters())
  assert count(diffusers.UNet2DModel(**unet_kwargs(c))) == count_params(ours) == 294_966_916
  assert count(diffusers.AutoencoderKL(**vae_kwargs(c))) == count_params(fs)


def test_peak_table_matches_device_names():
  from benchmarks.common import peak_flops

  assert peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4e12
  assert peak_flops('NVIDIA H100 PCIe', 'bfloat16') == 756.0e12
  assert peak_flops('NVIDIA H200', 'float32') == 494.7e12
  assert peak_flops('cpu', 'bfloat16') is None and peak_flops('cpu', 'bfloat16', 2.0) == 2e12
  # TPU v4 TensorCores as separate devices get half a chip; v5p megacore devices a whole one.
  assert peak_flops('TPU v4', 'bfloat16', device_cores=1) == 137.5e12
  assert peak_flops('TPU v5', 'bfloat16', device_cores=2) == 459e12
  assert peak_flops('TPU v5 lite', 'bfloat16') == 197e12
