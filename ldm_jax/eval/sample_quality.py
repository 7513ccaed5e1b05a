"""Sample quality as the paper reports it: Inception features of image sets (generated, a folder,
a samples .npz, or a dataset read with the training preprocessing), reference statistics, and
FID / Inception Score / precision-recall against them. Used by ``python -m ldm_jax.eval`` and by
the in-training evaluation (config.training.eval_every).

Preprocessing matters (latent-diffusion issues #213, #253): reference images go through exactly
the training pipeline (centre crop to a square, bicubic resize to config.data.image_size), then,
like every image set here, the FID network's own TF1-bilinear resize to 299 (``inception``).
"""

from __future__ import annotations

import functools
import logging
from typing import Iterable, Iterator

import jax
import ml_collections
import numpy as np

from ldm_jax import storage
from ldm_jax.eval import fid
from ldm_jax.eval.inception import has_classifier, make_feature_fn
from ldm_jax.eval.inception_weights import load_inception
from ldm_jax.parallel import sharding

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def _feature_fn(weights: str, mesh, spatial: bool):
  """(the jitted feature function, whether it has the classifier): one per weights, mesh and
  kind, so that the evaluations of one process share the weights and the compiled programs."""
  params = load_inception(weights)
  params_on_mesh = jax.device_put(params, sharding.replicated(mesh))
  return make_feature_fn(params_on_mesh, spatial), has_classifier(params)


class InceptionFeatures:
  """Batches of uint8 images (numpy, or global jax arrays already on the devices) -> Inception
  features, the batch split over the devices of ``mesh``."""

  def __init__(self, weights: str = 'fid-helper', mesh=None, spatial: bool = False):
    self.weights = weights
    self.mesh = mesh if mesh is not None else sharding.make_mesh()
    self._fn, self.has_classifier = _feature_fn(weights, self.mesh, spatial)

  def __call__(self, images) -> dict:
    """{'pool': [B, 2048]} (+ 'probs' [B, 1008] with a classifier, + 'spatial' [B, 2023] with
    ``spatial``) as numpy, for a batch."""
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

  def collect(self, batches: Iterable, total: int = 0, desc: str = 'features') -> dict:
    """All features of an iterable of batches, concatenated; with ``total`` (images), progress is
    shown (runtime.progress)."""
    from ldm_jax.runtime import progress

    parts: dict = {}
    for b in progress(batches, total, desc) if total else batches:
      for k, v in self(b).items():
        parts.setdefault(k, []).append(v)
    if not parts:
      raise ValueError('no images to compute features of')
    return {k: np.concatenate(v) for k, v in parts.items()}


# -- image sets ---------------------------------------------------------------------------------


def dataset_images(data_cfg, batch_size: int = 100, max_images: int = 0) -> Iterator[np.ndarray]:
  """uint8 batches of a config.data (digits, folder or TFDS, its split) through the training
  preprocessing, no flips, file order; unreadable images are skipped and counted."""
  from ldm_jax.data.pipeline import eval_batches

  for batch in eval_batches(data_cfg, batch_size, max_images, uint8=True):
    yield batch['image']


def _first_image_size(folder: str) -> int:
  from PIL import Image

  from ldm_jax.data.sources import list_images

  with storage.open_file(list_images(folder)[0]) as f, Image.open(f) as im:
    return min(im.size)


def image_set(
  path: str, image_size: int = 0, batch_size: int = 100, max_images: int = 0
) -> Iterator[np.ndarray]:
  """uint8 batches of a folder of images (recursive; centre-cropped and resized to
  ``image_size``, default the first image's shorter side) or of a samples .npz (its 'images', or
  'arr_0' as in openai/guided-diffusion's sample and reference batches)."""
  if path.endswith('.npz'):
    arrays = storage.load_npz(path)
    key = 'images' if 'images' in arrays else 'arr_0'  # sample.py's, or the ADM suite's batches
    if key not in arrays:
      raise ValueError(
        f'{path} has no "images" array (sample.py writes one) nor "arr_0" (an ADM batch)'
      )
    images = arrays[key]
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(
        f'{path}: images must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}'
      )
    images = images[:max_images] if max_images > 0 else images
    for s in range(0, len(images), batch_size):
      yield images[s : s + batch_size]
    return
  data = ml_collections.ConfigDict(
    dict(
      source='folder',
      path=path,
      image_size=image_size or _first_image_size(path),
      labels_from_subdirs=False,
      segmentation_dir='',
      split='all',
    )
  )
  yield from dataset_images(data, batch_size, max_images)


# -- statistics and scores ------------------------------------------------------------------


def reference_stats(
  features: dict, path: str | None = None, keep_features: bool = True, **info
) -> dict:
  """mu/sigma (+ the features for precision/recall) of a feature dict; saved as .npz if ``path``."""
  mu, sigma = fid.feature_stats(features['pool'])
  ref = {'mu': mu, 'sigma': sigma, 'num_images': np.asarray(len(features['pool']))}
  if keep_features:
    ref['features'] = features['pool'].astype(np.float32)
  for k, v in info.items():
    ref[k] = np.asarray(v)
  if path:
    storage.save_npz(path, **ref)
  return ref


def score(features: dict, ref: dict, k: int = 3) -> dict:
  """FID against ``ref`` (mu, sigma); Inception Score when the features have 'probs'; improved
  precision/recall (k-NN) when ``ref`` kept its features. Absent metrics say why."""
  pool = features['pool']
  out = {'num_samples': int(len(pool)), 'reference_num_images': int(ref.get('num_images', -1))}
  out['fid'] = fid.frechet_distance(*fid.feature_stats(pool), ref['mu'], ref['sigma'])
  if 'probs' in features:
    splits = 10 if len(pool) >= 10 else 1
    out['inception_score'], out['inception_score_std'] = fid.inception_score(
      features['probs'], splits
    )
  else:
    out['inception_score'] = None
    out['inception_score_note'] = (
      'needs the Inception classifier: --inception=<pytorch-fid '
      '.pth weights> (see ldm_jax/eval/inception.py)'
    )
  if 'features' in ref and min(len(pool), len(ref['features'])) > k:
    out['precision'], out['recall'] = fid.precision_recall(ref['features'], pool, k)
  else:
    out['precision'] = out['recall'] = None
  return out


# -- during training ----------------------------------------------------------------------------


class TrainingEvaluator:
  """config.training.eval_every: FID (and precision/recall; IS with a classifier) of
  eval_num_samples samples of the EMA weights (config.sampling, the same noise at every
  evaluation, so that the curve shows the model and not the draw) against the data. The
  reference is config.training.eval_reference, or computed from config.data on the first call
  and cached in WORKDIR/eval. Samples are drawn in batches split over the mesh."""

  def __init__(self, config, mesh, ldm, workdir: str):
    from ldm_jax.sampling.generate import SampleDrawer

    t = config.training
    self.config, self.mesh, self.workdir = config, mesh, workdir
    self.chunk = max(mesh.size, min(t.batch_size, t.eval_num_samples) // mesh.size * mesh.size)
    self.num = t.eval_num_samples
    self.features = InceptionFeatures(t.eval_inception, mesh)  # fails now if weights are missing
    self.ldm = ldm
    self.draw = SampleDrawer(config, mesh, ldm)
    self.ref = self.examples = None

  def _reference(self) -> dict:
    c, t = self.config, self.config.training
    if t.eval_reference:
      return fid.load_stats(t.eval_reference)
    d = c.data
    name = d.get('name') or (d.get('path') or d.source).rstrip('/').split('/')[-1]
    path = storage.join(
      self.workdir,
      'eval',
      f'reference_{name.replace("/", "_")}_{d.split}_{d.image_size}px_{self.num}.npz',
    )
    if storage.exists(path):
      return fid.load_stats(path)
    log.info('computing the FID reference: %d images of the data -> %s', self.num, path)
    feats = self.features.collect(dataset_images(d, self.chunk, self.num))
    return reference_stats(
      feats,
      path if jax.process_index() == 0 else None,
      inception=self.config.training.eval_inception,
    )

  def __call__(self, params, first_stage_params, scale_factor) -> dict:
    from ldm_jax.data.pipeline import condition_examples

    c = self.config
    if self.ref is None:
      self.ref = self._reference()
    if self.examples is None and self.ldm.task.samples_from_examples:
      self.examples = condition_examples(
        c.data, self.ldm.task, self.num
      )  # the data's conditions, as the paper
    parts: dict = {}
    for i, start in enumerate(range(0, self.num, self.chunk)):
      n = min(self.chunk, self.num - start)
      idx = np.minimum(np.arange(start, start + self.chunk), self.num - 1)  # pad the last batch
      pick = lambda a, idx=idx: np.asarray(a)[idx]
      examples = None if self.examples is None else jax.tree.map(pick, self.examples)
      key = jax.random.fold_in(jax.random.PRNGKey(c.seed + 2), i)
      weights = (params, first_stage_params, scale_factor)
      images, _ = self.draw(weights, key, self.chunk, examples, first_class=start)
      for k, v in self.features(images[:n]).items():
        parts.setdefault(k, []).append(v)
    s = score({k: np.concatenate(v) for k, v in parts.items()}, self.ref)
    out = {
      f'eval/{k}': s[k]
      for k in ('fid', 'inception_score', 'precision', 'recall')
      if s.get(k) is not None
    }
    return out
