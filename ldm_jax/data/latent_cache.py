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
from ldm_jax.runtime import progress
from ldm_jax.data.sources import CorruptImage, DataError

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
  is a multiple of batch_size). Unreadable images get zero latents and are marked, so that the
  batch iterator skips and counts them as it does for images; none readable is a DataError."""
  n = len(source)
  labels, bad = np.zeros(n, np.int32), set()
  captions = [None] * n
  out = [[], []]  # per flip: latents of each batch, None where no image of it could be read
  jobs = [
    (flip, list(range(start, min(n, start + batch_size))))
    for flip in ((False, True) if flips else (False,))
    for start in range(0, n, batch_size)
  ]
  for flip, idx in progress(jobs, n * (1 + flips), 'latent cache', size=lambda job: len(job[1])):
    imgs = {}
    for i in idx:
      try:
        example = source.load(i, flip)
      except CorruptImage as e:
        if i not in bad:
          log.warning('latent cache: skipping unreadable image (%d so far): %s', len(bad) + 1, e)
        bad.add(i)
        continue
      imgs[i], labels[i] = example['image'], example['label']
      captions[i] = example.get('caption')
    if not imgs:
      out[int(flip)].append((len(idx), None))
      continue
    shape = next(iter(imgs.values())).shape
    batch = np.zeros((batch_size, *shape), np.uint8)
    for j, i in enumerate(idx):
      if i in imgs:
        batch[j] = imgs[i]
    latents = np.array(jax.device_get(encode_fn(to_model_range(batch))))[: len(idx)]
    latents[[j for j, i in enumerate(idx) if i not in imgs]] = 0
    out[int(flip)].append((len(idx), latents))
  shapes = [lat.shape[1:] for o in out for _, lat in o if lat is not None]
  if not shapes:
    raise DataError(f'none of the {n} images could be read ({len(bad)} unreadable)')
  fill = lambda count, lat: np.zeros((count, *shapes[0]), np.float32) if lat is None else lat
  out = [[fill(*b) for b in o] for o in out]
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
