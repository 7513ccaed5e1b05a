"""DreamBooth's prior preservation, before training: the class images drawn by the model of
training.init_from for config.dreambooth.class_prompt into WORKDIR/class_images (or
config.dreambooth.class_dir), as 000000.png, 000001.png, ..., with the base's config.sampling
and the run's seed. A relaunch counts the images there
and draws only the missing ones (each batch depends on the seed and its first index alone, so the
images are the same as an uninterrupted run's); the data then reads them
(ldm_jax/data/dreambooth.py)."""

from __future__ import annotations

import io
import logging
import re

import jax
import numpy as np

from ldm_jax import storage

log = logging.getLogger(__name__)
_NAME = re.compile(r'^(\d{6})\.png$')


def _count(folder: str) -> int:
  """How many of 000000.png, 000001.png, ... are there, without a gap."""
  if not storage.isdir(folder):
    return 0
  have = {int(m[1]) for n in storage.listdir(folder) if (m := _NAME.match(n))}
  n = 0
  while n in have:
    n += 1
  return n


def prepare_class_images(config, workdir: str, watchdog=None) -> None:
  """Sets config.dreambooth.class_dir (default WORKDIR/class_images) and draws the missing class
  images there; nothing without config.dreambooth.num_class_images."""
  db = config.dreambooth if config.get('dreambooth') else None
  if db is None or not db.instance_prompt:
    return
  if not db.class_dir:
    db.class_dir = storage.join(workdir, 'class_images')
  want, have = db.num_class_images, _count(db.class_dir)
  if want <= 0 or have >= want:
    if want > 0:
      log.info('dreambooth: %d class images in %s', have, db.class_dir)
    return
  from ldm_jax.sampling.options import SamplingOptions
  from ldm_jax.sampling.pipeline import load_workdir

  if watchdog is not None:
    watchdog.pause('building the base model for the class images')
  pipe = load_workdir(config.training.init_from, seed=config.seed)
  batch = pipe.batch_for(SamplingOptions.batch_size)  # the default batch iter_samples draws
  first = have - have % batch  # the batch of the first missing image, drawn again
  size = config.data.image_size
  log.info('dreambooth: drawing %d class images of %r into %s (%d there)', want - have,
           db.class_prompt, db.class_dir, have)  # fmt: skip
  storage.makedirs(db.class_dir)
  batches = pipe.iter_samples(want, first=first, prompt=db.class_prompt, height=size, width=size,
                              seed=config.seed)  # fmt: skip
  index = first
  for images in batches:
    if jax.process_index() == 0:
      for image in images:
        _write_png(storage.join(db.class_dir, f'{index:06d}.png'), image)
        index += 1
    if watchdog is not None:
      watchdog.progress('drawing the class images')
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices('dreambooth class images')


def _write_png(path: str, image: np.ndarray) -> None:
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(np.asarray(image)).save(buf, format='PNG')
  storage.write_bytes(path, buf.getvalue())
