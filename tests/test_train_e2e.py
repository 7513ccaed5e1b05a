"""End to end through the command-line tools: train both stages, kill and resume, sample, and the
clear errors of bad input. Each test starts fresh processes (compilation cache shared)."""

import os

import numpy as np
import pytest

from ldm_jax.checkpoint import Checkpointer, CheckpointMismatch, load_raw
from tests.helpers import TINY_AE_OVERRIDES, run_cli

pytestmark = pytest.mark.slow
ENV = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}


def train_ae(workdir, *extra, timeout=600):
  return run_cli(
    'train.py',
    '--config=configs/digits_autoencoder.py',
    f'--workdir={workdir}',
    *TINY_AE_OVERRIDES,
    *extra,
    env=ENV,
    timeout=timeout,
  )


@pytest.fixture(scope='module')
def ae_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('ae'))
  r = train_ae(workdir, '--config.training.num_steps=4', '--config.training.checkpoint_every=2')
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def test_autoencoder_run_writes_checkpoints_logs_and_loss(ae_run):
  config, step, state, _ = load_raw(ae_run)
  assert step == 4 and int(state['step']) == 4 and config['stage'] == 'autoencoder'
  assert os.listdir(os.path.join(ae_run, 'tensorboard'))


def test_checkpoint_saved_on_two_devices_loads_on_one(ae_run):
  """Sampling/evaluation on another machine: a run saved from 2 devices restores on 1."""
  code = (
    'import jax; from ldm_jax.checkpoint import load_raw; '
    f'c, s, st, _ = load_raw({ae_run!r}); assert jax.device_count() == 1; '
    "print('ok', s, st['params']['decoder']['conv_out']['kernel'].shape)"
  )
  r = run_cli('-c', code, env={'XLA_FLAGS': '--xla_force_host_platform_device_count=1'})
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.startswith('ok 4 (3, 3, 32, 3)')


def test_ldm_trains_on_the_autoencoder_and_samples(ae_run, tmp_path):
  workdir = str(tmp_path / 'ldm')
  r = run_cli(
    'train.py',
    '--config=configs/digits_ldm.py',
    f'--workdir={workdir}',
    f'--config.first_stage.checkpoint={ae_run}',
    '--config.data.image_size=16',
    '--config.first_stage.ch=32',
    '--config.first_stage.ch_mult=(1,2)',
    '--config.first_stage.num_res_blocks=1',
    '--config.first_stage.resolution=16',
    '--config.training.batch_size=8',
    '--config.training.num_steps=3',
    '--config.training.log_every=1',
    '--config.training.checkpoint_every=3',
    '--config.training.sample_every=3',
    '--config.training.num_sample_images=4',
    '--config.sampling.steps=4',
    env=ENV,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'scale_by_std' in r.stderr
  config, step, state, fs = load_raw(workdir)
  assert step == 3 and fs is not None and state['ema_params'] is not None
  assert 0 < float(state['scale_factor']) != 1.0  # computed from the first batch, stored
  assert any(f.startswith('samples_') for f in os.listdir(os.path.join(workdir, 'images')))
  out = str(tmp_path / 'samples')
  for sampler, extra in [('ddim', ['--eta=0.5']), ('plms', []), ('ddpm', ['--steps=1000'])]:
    r = run_cli(
      'sample.py',
      f'--workdir={workdir}',
      '--num_samples=3',
      '--batch_size=4',
      f'--sampler={sampler}',
      '--steps=4',
      *extra,
      '--class_label=all',
      '--guidance_scale=2',
      '--seed=7',
      f'--outdir={out}/{sampler}',
      env=ENV,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = np.load(f'{out}/{sampler}/samples.npz')
    assert data['images'].shape == (3, 16, 16, 3) and list(data['labels']) == [0, 1, 2]
    assert os.path.exists(f'{out}/{sampler}/grid.png')
  # Same seed, same samples (a stochastic sampler: eta 0.5); another seed, other samples.
  for name, seed in (('again', 7), ('other', 8)):
    r = run_cli(
      'sample.py',
      f'--workdir={workdir}',
      '--num_samples=3',
      '--batch_size=4',
      '--sampler=ddim',
      '--steps=4',
      '--eta=0.5',
      '--class_label=all',
      '--guidance_scale=2',
      f'--seed={seed}',
      f'--outdir={out}/{name}',
      env=ENV,
    )
    assert r.returncode == 0, r.stderr[-3000:]
  first = np.load(f'{out}/ddim/samples.npz')['images']
  np.testing.assert_array_equal(np.load(f'{out}/again/samples.npz')['images'], first)
  assert np.any(np.load(f'{out}/other/samples.npz')['images'] != first)


def test_missing_data_dir_is_a_clear_error_and_writes_nothing_bad(tmp_path):
  r = train_ae(
    str(tmp_path / 'w'),
    '--config.data.source=folder',
    f'--config.data.path={tmp_path}/missing',
    '--config.training.num_steps=2',
    timeout=300,
  )
  assert r.returncode != 0 and 'does not exist' in r.stderr


def test_checkpoint_from_another_config_is_refused(ae_run):
  from ldm_jax.configs import digits_autoencoder

  config = digits_autoencoder.get_config()  # 32x32 channels (1,2,2): not the tiny run's model
  with pytest.raises(CheckpointMismatch, match='first_stage.ch_mult'):
    Checkpointer(ae_run, async_save=False).check_compatible(4, config)
  r = train_ae(ae_run, '--config.first_stage.ch=64', '--config.training.num_steps=6', timeout=300)
  assert r.returncode != 0 and 'different model config' in r.stderr and 'first_stage.ch' in r.stderr
