"""FID, Inception Score and precision/recall on feature arrays with known answers."""

import numpy as np
import pytest

from ldm_jax.eval import fid


def gaussian(n, d, mean=0.0, scale=1.0, seed=0):
  return np.random.default_rng(seed).normal(mean, scale, (n, d))


def test_frechet_distance_closed_forms():
  mu, sigma = fid.feature_stats(gaussian(500, 8))
  assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-8
  # diagonal covariances: |dmu|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
  s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
  m1, m2 = np.zeros(3), np.array([1.0, 2.0, -2.0])
  expected = 9.0 + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
  assert fid.frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_fid_is_small_for_the_same_distribution_and_large_for_another():
  a, b = gaussian(2000, 16, seed=1), gaussian(2000, 16, seed=2)
  same = fid.frechet_distance(*fid.feature_stats(a), *fid.feature_stats(b))
  shifted = fid.frechet_distance(*fid.feature_stats(a), *fid.feature_stats(b + 1.0))
  d = a.mean(0) - b.mean(0)  # a shift moves only the mean term, exactly
  assert same < 0.2 and shifted == pytest.approx(same + np.sum((d - 1.0) ** 2 - d**2), rel=1e-6)
  assert shifted > 15


def test_stats_round_trip_and_bad_files(tmp_path):
  a = gaussian(100, 4)
  fid.save_stats(str(tmp_path / 'ref.npz'), a)
  stats = fid.load_stats(str(tmp_path / 'ref.npz'))
  np.testing.assert_allclose(stats['mu'], a.mean(0))
  np.testing.assert_allclose(stats['sigma'], np.cov(a, rowvar=False))
  assert int(stats['num_images']) == 100
  np.savez(tmp_path / 'other.npz', x=a)
  with pytest.raises(ValueError, match='no mu/sigma'):
    fid.load_stats(str(tmp_path / 'other.npz'))


def test_inception_score_extremes():
  classes = 10
  confident_diverse = np.eye(classes)[np.arange(1000) % classes]
  mean, std = fid.inception_score(confident_diverse)
  assert mean == pytest.approx(classes, rel=1e-6) and std < 1e-6
  confident_one_class = np.eye(classes)[np.zeros(1000, int)]
  assert fid.inception_score(confident_one_class)[0] == pytest.approx(1.0)
  uniform = np.full((1000, classes), 1.0 / classes)
  assert fid.inception_score(uniform)[0] == pytest.approx(1.0)


def test_precision_recall_detects_mode_collapse_and_disjoint_sets():
  real = gaussian(600, 4, seed=3)
  assert fid.precision_recall(real, real.copy()) == (1.0, 1.0)
  far = fid.precision_recall(real, gaussian(600, 4, mean=50.0, seed=4))
  assert far == (0.0, 0.0)
  # fakes from the real distribution's centre only: precise, but they miss most of the real data
  collapsed = gaussian(600, 4, scale=0.2, seed=5)
  precision, recall = fid.precision_recall(real, collapsed)
  assert precision > 0.95 and recall < 0.3
  fresh = fid.precision_recall(real, gaussian(600, 4, seed=6))
  assert fresh[0] > 0.6 and fresh[1] > 0.6
