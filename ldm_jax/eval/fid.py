"""Sample-quality metrics on Inception features, as the paper reports them (Tables 1-3, 6, 18):
FID (pytorch-fid's formula), Inception Score (10 splits) and improved precision/recall
(Kynkäänniemi et al. 2019, k=3 nearest neighbours; the ADM evaluator's method).

Inputs are feature arrays [N, D] (the 2048-d pool features of the FID InceptionV3) and class
probabilities [N, 1008] (its logits' softmax) for IS; reference statistics are stored as .npz.
FID and IS run in float64 NumPy/SciPy (the matrix square root, as pytorch-fid); the k-NN
distances of precision/recall (N x N x D) run in JAX, batched, on the default device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from ldm_jax import storage


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) in float64, the covariance unbiased (N - 1) as pytorch-fid's np.cov."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f'features must be [N >= 2, D], got shape {f.shape}')
  return f.mean(axis=0), np.cov(f, rowvar=False)


def save_stats(path: str, features, **extra) -> None:
  """Reference statistics as .npz: mu, sigma (and the features themselves when precision/recall
  will be computed against them: pass ``features_kept=features``)."""
  mu, sigma = feature_stats(features)
  storage.save_npz(path, mu=mu, sigma=sigma, num_images=np.asarray(len(features)), **extra)


def load_stats(path: str) -> dict:
  arrays = storage.load_npz(path)
  if 'mu' not in arrays or 'sigma' not in arrays:
    raise ValueError(
      f'{path} has no mu/sigma arrays: not a statistics file written by '
      'ldm_jax (or by pytorch-fid --save-stats)'
    )
  return arrays


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), computed as pytorch-fid does (scipy sqrtm
  in float64; eps on the diagonals when the product is singular)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = (
    np.atleast_2d(np.asarray(sigma1, np.float64)),
    np.atleast_2d(np.asarray(sigma2, np.float64)),
  )
  if mu1.shape != mu2.shape or s1.shape != s2.shape:
    raise ValueError(f'statistics of different dimensions: {mu1.shape} vs {mu2.shape}')
  diff = mu1 - mu2
  covmean = linalg.sqrtm(s1.dot(s2))
  if not np.isfinite(covmean).all():
    offset = np.eye(s1.shape[0]) * eps
    covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(
        f'imaginary component {np.max(np.abs(covmean.imag))} in the covariance '
        'square root: too few samples for the feature dimension?'
      )
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
  """(mean, std) over ``splits`` equal parts of exp(E_x KL(p(y|x) || p(y))), the original
  formula (Salimans et al. 2016; torch-fidelity's splits)."""
  p = np.asarray(probs, np.float64)
  if p.ndim != 2 or len(p) < splits:
    raise ValueError(f'probs must be [N >= splits, classes], got {p.shape} for {splits} splits')
  scores = []
  for part in np.array_split(p, splits):
    py = part.mean(axis=0, keepdims=True)
    kl = np.sum(part * (np.log(np.maximum(part, 1e-30)) - np.log(np.maximum(py, 1e-30))), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _squared_distances(a, b):
  d = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnums=2)
def _kth_nearest(a, b, k: int):
  """Squared distance of each row of ``a`` to its k-th nearest row of ``b`` (index 0: itself
  when a's rows are in b)."""
  return -jax.lax.top_k(-_squared_distances(a, b), k + 1)[0][:, k]


@jax.jit
def _inside_any(points, centres, radii):
  return jnp.any(_squared_distances(points, centres) <= radii[None, :], axis=1)


def _knn_radii(features, k: int, batch: int) -> np.ndarray:
  return np.concatenate(
    [
      np.asarray(_kth_nearest(features[s : s + batch], features, k))
      for s in range(0, len(features), batch)
    ]
  )


def _coverage(points, centres, radii, batch: int) -> float:
  """Fraction of ``points`` inside at least one ball (centre, radius) of the other set."""
  inside = np.concatenate(
    [
      np.asarray(_inside_any(points[s : s + batch], centres, radii))
      for s in range(0, len(points), batch)
    ]
  )
  return float(inside.mean())


def precision_recall(real, fake, k: int = 3, batch: int = 1000) -> tuple[float, float]:
  """Improved precision (fake samples inside the real manifold: the union of k-NN balls of the
  real features) and recall (real samples inside the fake manifold)."""
  r, f = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)  # on the accelerator
  if min(len(r), len(f)) <= k:
    raise ValueError(f'precision/recall with k={k} needs more than {k} samples per set')
  precision = _coverage(f, r, _knn_radii(r, k, batch), batch)
  recall = _coverage(r, f, _knn_radii(f, k, batch), batch)
  return precision, recall
