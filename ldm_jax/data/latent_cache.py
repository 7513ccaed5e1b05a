"""Cached-latent training: encode a random-access dataset once with the frozen first stage and train
the LDM on the stored latents. KL: the posterior moments are stored and a fresh sample is drawn every
step (as training on images would); VQ: the pre-quantisation latents. With random flips both the
image and its mirror are encoded. Held in host memory: meant for datasets that fit (the embedded
digits: 1,500 x 8x8x6 floats). Captions are kept (text-to-image); tasks whose condition is made
from the pixels or follows the crop (super-resolution, inpainting, layout, semantic) train from
images."""

from __future__ import annotations

import logging

import jax
import numpy as np

from ldm_jax.images import to_model_range
from ldm_jax.data.sources import CorruptImage

log = logging.getLogger(__name__)


class LatentCache:
  key = 'moments'

  def __init__(self, latents: np.ndarray, labels: np.ndarray, bad=(), captions=None):
    self.latents, self.labels = latents, labels  # latents: [2 (flip), N, h, w, c]
    self.captions = captions  # text-to-image: each image's captions (flip-independent)
    self.bad = set(bad)  # unreadable images: raise like the image source would

  def __len__(self):
    return self.labels.shape[0]

  def load(self, index: int, flip: bool = False) -> dict:
    if index in self.bad:
      raise CorruptImage(f'image {index} was unreadable when the cache was built')
    example = {'moments': self.latents[int(flip)][index], 'label': int(self.labels[index])}
    if self.captions is not None:
      example['caption'] = self.captions[index]
    return example


def encode_dataset(source, encode_fn, batch_size: int, flips: bool) -> LatentCache:
  """encode_fn: uint8->[-1,1] image batch [B, H, W, 3] -> latents [B, h, w, c] (jitted, any B that
  is a multiple of batch_size). Unreadable images are encoded as zeros and marked, so that the
  batch iterator skips and counts them as it does for images."""
  n = len(source)
  out, labels, bad = [[], []], np.zeros(n, np.int32), set()
  captions = [None] * n
  for flip in (False, True) if flips else (False,):
    for start in range(0, n, batch_size):
      idx = list(range(start, min(n, start + batch_size)))
      imgs = []
      for i in idx:
        try:
          example = source.load(i, flip)
          img, labels[i] = example['image'], example['label']
          captions[i] = example.get('caption')
        except CorruptImage as e:
          log.warning('latent cache: skipping unreadable image: %s', e)
          bad.add(i)
          img = np.zeros_like(imgs[0]) if imgs else None
        imgs.append(img)
      if any(im is None for im in imgs):
        shape = next(im.shape for im in imgs if im is not None)
        imgs = [np.zeros(shape, np.uint8) if im is None else im for im in imgs]
      batch = to_model_range(np.stack(imgs))
      pad = batch_size - len(idx)
      if pad:
        batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
      out[int(flip)].append(np.asarray(jax.device_get(encode_fn(batch)))[: len(idx)])
  latents = [np.concatenate(o) for o in out if o]
  if len(latents) == 1:
    latents = latents * 2
  log.info(
    'latent cache: %d images -> %s latents (%s flips)',
    n,
    latents[0].shape[1:],
    'with' if flips else 'no',
  )
  has_captions = any(c is not None for c in captions)
  return LatentCache(np.stack(latents), labels, bad, captions if has_captions else None)
