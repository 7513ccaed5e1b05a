"""Aspect-ratio buckets (``config.data.buckets``; SDXL, Podell et al. 2023, section 2.3 and
appendix I): each image goes to the bucket of nearest aspect ratio in a list of (height, width)
shapes of about equal area, is resized to cover the bucket and centre-cropped to it, and every
global batch comes from one bucket.

The order is a pure function of (seed, global batch size, position), as for square batches: in
epoch e each bucket's images are permuted (seeded by (seed, e, bucket)) and cut into global
batches (the remainder, a different one each epoch, waits for the next epoch), and all the
epoch's batches are shuffled together (seeded by (seed, e)), so buckets are drawn in proportion to
their size. Global batch k is batch k mod N of epoch k // N; position q is slot q mod B of global
batch q // B, so a process reads its contiguous part of each batch as everywhere else, and a
resumed run sees exactly the batches it would have seen. Each example carries what SDXL's size
and crop conditioning reads: ``original_size`` (height, width of the file) and ``crop_top_left``
(top, left of the crop in the resized image, as diffusers' SDXL training script computes it).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import math
import time

import numpy as np
from PIL import Image

from ldm_jax.config.buckets import parse_buckets
from ldm_jax.data.sources import CorruptImage, DataError

log = logging.getLogger(__name__)


def nearest_bucket(hw: tuple[int, int], buckets) -> int:
  """Index of the bucket whose aspect ratio is nearest (in log ratio) to the image's ``hw``."""
  ratio = math.log(hw[0] / hw[1])
  return int(np.argmin([abs(ratio - math.log(h / w)) for h, w in buckets]))


def image_sizes(source, num_threads: int = 32) -> np.ndarray:
  """(height, width) of every image of ``source`` from its file header (int32 [N, 2]; -1 for a
  file that cannot be read), read by ``num_threads`` threads."""
  t0 = time.time()

  def size(index):
    try:
      with source.open_image(index) as f, Image.open(f) as im:
        return im.height, im.width
    except (OSError, ValueError, SyntaxError):
      return -1, -1

  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    sizes = np.array(list(pool.map(size, range(len(source)))), np.int32).reshape(-1, 2)
  log.info('data.buckets: read the sizes of %d images in %.1fs', len(source), time.time() - t0)
  return sizes


class BucketPlan:
  """Global batch k -> (bucket, the global batch's source indices), a pure function of
  (sizes, buckets, global batch, seed); see the module docstring."""

  def __init__(self, sizes: np.ndarray, buckets, global_batch: int, seed: int):
    self.buckets, self.global_batch, self.seed = tuple(buckets), global_batch, seed
    readable = sizes[:, 0] > 0
    assign = np.full(len(sizes), -1)
    assign[readable] = [nearest_bucket(hw, self.buckets) for hw in sizes[readable]]
    self.members = [np.flatnonzero(assign == b) for b in range(len(self.buckets))]
    self.unreadable = int((~readable).sum())
    self.slots = [(b, i) for b, m in enumerate(self.members) for i in range(len(m) // global_batch)]
    if not self.slots:
      counts = {f'{h}x{w}': len(m) for (h, w), m in zip(self.buckets, self.members) if len(m)}
      raise DataError(
        f'no aspect-ratio bucket holds a whole global batch of {global_batch} images (images '
        f'per bucket: {counts}); use a smaller config.training.batch_size or fewer buckets'
      )
    self._epoch = None

  @property
  def shapes_used(self) -> list[tuple[int, int]]:
    """The bucket shapes that batches come from: one compiled training step each."""
    return sorted({self.buckets[b] for b, _ in self.slots})

  def _epoch_plan(self, epoch: int):
    if self._epoch is None or self._epoch[0] != epoch:
      perms = [
        np.random.default_rng([self.seed, epoch, b]).permutation(m)
        for b, m in enumerate(self.members)
      ]
      order = np.random.default_rng([self.seed, epoch]).permutation(len(self.slots))
      self._epoch = (epoch, perms, order)
    return self._epoch[1:]

  def batch(self, k: int) -> tuple[int, np.ndarray, int]:
    """(bucket, that bucket's permutation in this epoch, where global batch k starts in it): the
    batch is the B indices from there, the ones after it replace unreadable images."""
    epoch, j = divmod(k, len(self.slots))
    perms, order = self._epoch_plan(epoch)
    b, i = self.slots[order[j]]
    return b, perms[b], i * self.global_batch

  def indices(self, k: int) -> np.ndarray:
    b, perm, start = self.batch(k)
    return perm[start : start + self.global_batch]


class BucketedExamples:
  """Global position -> example, as ``PermutedExamples`` but in bucket order: position q is slot
  q mod B of global batch q // B, loaded at that batch's bucket shape; an unreadable image is
  replaced by the next readable one of its bucket. Picklable (grain workers run it)."""

  local_positions = False

  def __init__(self, source, plan: BucketPlan, seed: int, random_flip: bool):
    self.source, self.plan, self.seed, self.random_flip = source, plan, seed, random_flip
    self.bad: set[int] = set()
    self.num_unreadable = plan.unreadable  # found by the size scan: skipped and counted

  def __call__(self, pos: int):
    k, slot = divmod(pos, self.plan.global_batch)
    b, perm, start = self.plan.batch(k)
    flip = self.random_flip and np.random.default_rng([self.seed, 1, pos]).random() < 0.5
    found, n = [], len(perm)
    for j in itertools.chain([start + slot], range(start + self.plan.global_batch, start + n)):
      index = int(perm[j % n])
      if index in self.bad:
        continue
      try:
        return self.source.load(index, flip, size=self.plan.buckets[b]), found
      except CorruptImage as e:
        self.bad.add(index)
        found.append(index)
        log.warning('skipping unreadable image (%d so far): %s', len(self.bad), e)
    raise DataError(f'none of the images of bucket {self.plan.buckets[b]} could be read')


def bucketed_examples(source, data_cfg, global_batch: int, seed: int) -> BucketedExamples:
  """The ``examples`` of RandomAccessBatches for ``config.data.buckets``; logs the buckets in use
  (each is one compile of the training step)."""
  if not hasattr(source, 'open_image'):
    raise DataError(
      f'config.data.buckets needs a folder, jsonl or records source, not {data_cfg.source!r}; '
      'pack tar shards or TFDS data with `python -m ldm_jax.data.pack`, or set '
      "--config.data.buckets=''"
    )
  buckets = parse_buckets(data_cfg.buckets)
  plan = BucketPlan(image_sizes(source), buckets, global_batch, seed)
  used = plan.shapes_used
  per = {f'{h}x{w}': len(m) for (h, w), m in zip(plan.buckets, plan.members) if len(m)}
  log.info(
    'data.buckets: %d images in %d buckets %s; %d shapes hold a whole global batch (one compiled '
    'step each): %s; %d unreadable',
    sum(per.values()),
    len(per),
    per,
    len(used),
    ', '.join(f'{h}x{w}' for h, w in used),
    plan.unreadable,
  )
  return BucketedExamples(source, plan, seed, data_cfg.random_flip)
