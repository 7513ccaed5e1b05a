"""Sample quality as the paper reports it: Inception features of image sets (generated, a folder,
a samples .npz, or a dataset read with the training preprocessing), reference statistics, and
FID / Inception Score / precision-recall against them. Used by ``python -m ldm_jax.eval`` and by
the in-training evaluation (config.training.eval_every).

Preprocessing matters (latent-diffusion issues #213, #253): reference images go through exactly
the training pipeline (centre crop to a square, bicubic resize to config.data.image_size), then,
like every image set here, the FID network's own TF1-bilinear resize to 299 (``inception``).
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Iterator

import jax
import ml_collections
import numpy as np

from ldm_jax import sharding
from ldm_jax.eval import fid
from ldm_jax.eval.inception import has_classifier, load_inception, make_feature_fn

log = logging.getLogger(__name__)


class InceptionFeatures:
  """Batches of uint8 images (numpy, or global jax arrays already on the devices) -> Inception
  features, the batch split over the devices of ``mesh``."""

  def __init__(self, weights: str = 'fid-helper', mesh=None):
    self.weights = weights
    params = load_inception(weights)
    self.has_classifier = has_classifier(params)
    self.mesh = mesh if mesh is not None else sharding.make_mesh()
    self._fn = make_feature_fn(jax.device_put(params, sharding.replicated(self.mesh)))

  def __call__(self, images) -> dict:
    """{'pool': [B, 2048]} (+ 'probs' [B, 1008] with a classifier) as numpy, for a batch."""
    n = len(images)
    if not isinstance(images, jax.Array):
      pad = -n % self.mesh.size
      images = np.asarray(images)
      if images.dtype != np.uint8:
        raise ValueError(f'images must be uint8 [B, H, W, 3], got {images.dtype}')
      if pad:
        images = np.concatenate([images, np.repeat(images[-1:], pad, 0)])
      images = jax.device_put(images, sharding.batch_sharded(self.mesh))
    return {k: sharding.to_host(v)[:n] for k, v in self._fn(images).items()}

  def collect(self, batches: Iterable) -> dict:
    """All features of an iterable of batches, concatenated."""
    parts: dict = {}
    for b in batches:
      for k, v in self(b).items():
        parts.setdefault(k, []).append(v)
    if not parts:
      raise ValueError('no images to compute features of')
    return {k: np.concatenate(v) for k, v in parts.items()}


# -- image sets ---------------------------------------------------------------------------------

def _uint8(images_in_model_range: np.ndarray) -> np.ndarray:
  return np.clip(np.round((images_in_model_range + 1.0) * 127.5), 0, 255).astype(np.uint8)


def dataset_images(data_cfg, batch_size: int = 100, max_images: int = 0) -> Iterator[np.ndarray]:
  """uint8 batches of a config.data (digits, folder or TFDS, its split) through the training
  preprocessing, no flips, file order; unreadable images are skipped and counted."""
  from ldm_jax.data.pipeline import eval_batches
  for batch in eval_batches(data_cfg, batch_size, max_images):
    yield _uint8(batch['image'])


def _first_image_size(folder: str) -> int:
  from PIL import Image
  from ldm_jax.data.sources import list_images
  with Image.open(list_images(folder)[0]) as im:
    return min(im.size)


def image_set(path: str, image_size: int = 0, batch_size: int = 100,
              max_images: int = 0) -> Iterator[np.ndarray]:
  """uint8 batches of a folder of images (recursive; centre-cropped and resized to
  ``image_size``, default the first image's shorter side) or of a samples .npz (its 'images')."""
  if path.endswith('.npz'):
    with np.load(path) as f:
      if 'images' not in f:
        raise ValueError(f'{path} has no "images" array (sample.py writes one)')
      images = f['images']
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f'{path}: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}')
    images = images[:max_images] if max_images > 0 else images
    for s in range(0, len(images), batch_size):
      yield images[s:s + batch_size]
    return
  data = ml_collections.ConfigDict(dict(
      source='folder', path=path, image_size=image_size or _first_image_size(path),
      labels_from_subdirs=False, segmentation_dir='', split='all'))
  yield from dataset_images(data, batch_size, max_images)


# -- statistics and scores ------------------------------------------------------------------

def reference_stats(features: dict, path: str | None = None, keep_features: bool = True,
                    **info) -> dict:
  """mu/sigma (+ the features for precision/recall) of a feature dict; saved as .npz if ``path``."""
  mu, sigma = fid.feature_stats(features['pool'])
  ref = {'mu': mu, 'sigma': sigma, 'num_images': np.asarray(len(features['pool']))}
  if keep_features:
    ref['features'] = features['pool'].astype(np.float32)
  for k, v in info.items():
    ref[k] = np.asarray(v)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + '.tmp.npz'
    np.savez(tmp, **ref)
    os.replace(tmp, path)
  return ref


def score(features: dict, ref: dict, k: int = 3) -> dict:
  """FID against ``ref`` (mu, sigma); Inception Score when the features have 'probs'; improved
  precision/recall (k-NN) when ``ref`` kept its features. Absent metrics say why."""
  pool = features['pool']
  out = {'num_samples': int(len(pool)), 'reference_num_images': int(ref.get('num_images', -1))}
  out['fid'] = fid.frechet_distance(*fid.feature_stats(pool), ref['mu'], ref['sigma'])
  if 'probs' in features:
    splits = 10 if len(pool) >= 10 else 1
    out['inception_score'], out['inception_score_std'] = fid.inception_score(features['probs'], splits)
  else:
    out['inception_score'] = None
    out['inception_score_note'] = ('needs the Inception classifier: --inception=<pytorch-fid '
                                   '.pth weights> (see ldm_jax/eval/inception.py)')
  if 'features' in ref and min(len(pool), len(ref['features'])) > k:
    out['precision'], out['recall'] = fid.precision_recall(ref['features'], pool, k)
  else:
    out['precision'] = out['recall'] = None
  return out
