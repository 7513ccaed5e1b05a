"""Deviceless compilation for TPU pod slices (python -m ldm_jax.aot, libtpu): the training step
train.py runs, and the LDM sampling loop, compiled for a v5e slice on this CPU machine; a config
whose state cannot fit a chip is reported as such, with the settings that do fit."""

import importlib.util
import json

import pytest

from tests.helpers import TINY_AE_OVERRIDES, run_cli

pytestmark = [
  pytest.mark.slow,
  pytest.mark.skipif(
    importlib.util.find_spec('libtpu') is None, reason="pip install -e '.[aot]' (libtpu)"
  ),
]
ENV = {'JAX_PLATFORMS': 'cpu'}


def aot(*args):
  r = run_cli('-m', 'ldm_jax.aot', '--topology=v5e:2x2', *args, env=ENV, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  return json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_tiny_configs_compile_for_a_v5e_slice():
  ldm, _ = aot(
    '--config=configs/digits_ldm.py',
    *TINY_AE_OVERRIDES,
    '--config.unet.model_channels=32',
    '--config.sampling.steps=4',
  )
  assert ldm['config'] == 'configs/digits_ldm.py' and ldm['stage'] == 'ldm'
  assert ldm['device_kind'] == 'TPU v5 lite' and ldm['devices'] == 4
  assert ldm['mesh'] == {'data': 4, 'fsdp': 1} and ldm['fits'] is True
  assert 0 < ldm['peak_bytes'] < ldm['hbm_bytes'] == 16 * 2**30
  assert ldm['flops_per_device'] > 0 and ldm['est_step_seconds'] > 0
  assert 0 < ldm['est_mfu'] <= 1 and ldm['time_model'] in ('xla', 'roofline')
  s = ldm['sampling']
  assert s['steps'] == 4 and s['images'] == 4 and s['est_seconds'] > 0
  # the same step with 2 micro-batches: the cost is of the whole step (loops count once in XLA)
  accum, _ = aot(
    '--config=configs/digits_ldm.py',
    *TINY_AE_OVERRIDES,
    '--config.unet.model_channels=32',
    '--config.training.grad_accum_steps=2',
    '--nosampling',
  )
  assert accum['grad_accum_steps'] == 2 and 'sampling' not in accum
  # (each micro-step's cost includes the optimizer update once: a little more in all)
  assert accum['flops_per_device'] == pytest.approx(ldm['flops_per_device'], rel=0.15)
  ae, _ = aot('--config=configs/digits_autoencoder.py', *TINY_AE_OVERRIDES)
  assert ae['stage'] == 'autoencoder' and ae['fits'] is True and ae['flops_per_device'] > 0


def test_a_config_that_cannot_fit_says_so_and_finds_settings_that_do():
  """A 16.7M-class embedding (1.07B parameters): parameters, Adam moments, EMA and gradients
  replicated need ~24 GiB per device, more than a v5e chip's 16 GiB; sharded over the 4 chips
  (FSDP) they fit."""
  out, err = aot('--config=configs/digits_ldm.py', '--config.cond_stage.n_classes=16777216')
  assert out['fits'] is False and 'RESOURCE_EXHAUSTED' in out['compile_error']
  assert '# does not fit the 16 GiB HBM of a TPU v5 lite device' in err
  s = out['suggestion']
  assert s['settings'] == 'fsdp over all chips'
  assert s['flags'] == '--config.mesh.data=1 --config.mesh.fsdp=-1'
  assert s['report']['fits'] is True and s['report']['mesh'] == {'data': 1, 'fsdp': 4}


def test_an_autoencoder_that_cannot_fit_is_offered_fewer_images_per_chip():
  """The first stage has no bf16, remat or micro-batches: after FSDP, the search tries one image
  per chip (kl_f4 at its published batch 10 on 2 v5e chips needs more than 16 GiB; BENCHMARKS.md)."""
  from ldm_jax.aot.search import apply_overrides, candidates
  from ldm_jax.configs.released import kl_f4

  found = candidates(kl_f4.get_config(), 2)
  assert [d for d, _ in found] == ['fsdp over all chips', 'one image per chip (global batch 2)']
  assert apply_overrides(kl_f4.get_config(), found[1][1]).training.batch_size == 2
  assert all('batch_size' not in o for _, o in candidates(kl_f4.get_config(), 16))
