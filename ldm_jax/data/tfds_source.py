"""TFDS datasets by name (e.g. 'lsun/church_outdoor'), one disjoint even split per process.

TensorFlow runs on the CPU only (GPUs are hidden from it so it never takes accelerator memory).
Resuming skips ``start_step`` batches of the seeded stream: the same batches, at the cost of
reading past them once.
"""
from __future__ import annotations

import numpy as np

from ldm_jax.data.sources import DataError


def import_tf():
  import tensorflow as tf
  tf.config.set_visible_devices([], 'GPU')
  return tf


def _builder(tfds, d):
  try:
    return tfds.builder(d.name, data_dir=d.data_dir or None)
  except Exception as e:  # DatasetNotFoundError and friends
    raise DataError(f'unknown TFDS dataset {d.name!r} (config.data.name): {e}') from e


def _as_dataset(tfds, builder, d, split, **kwargs):
  try:
    return builder.as_dataset(split=split, **kwargs)
  except Exception as e:  # not prepared, manual download, ...
    raise DataError(f'TFDS dataset {d.name!r} split {d.split!r} could not be read: {e}. Prepare it '
                    f'with `tfds build {d.name}` (some datasets need a manual download).') from e


def _preprocess_fn(tf, d, builder, seed, random_flip):
  """(index, example) -> {'image': [-1, 1] float32, 'label'}: centre crop, bicubic resize, flip."""
  if d.image_key not in builder.info.features:
    raise DataError(f'TFDS dataset {d.name!r} has no feature {d.image_key!r} '
                    f'(config.data.image_key); features: {list(builder.info.features)}')
  has_label = d.label_key in builder.info.features
  size = d.image_size

  def preprocess(index, ex):
    img = ex[d.image_key]
    if img.shape[-1] == 1:
      img = tf.image.grayscale_to_rgb(img)
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    crop = tf.minimum(h, w)
    img = tf.image.crop_to_bounding_box(img, (h - crop) // 2, (w - crop) // 2, crop, crop)
    img = tf.image.resize(tf.cast(img, tf.float32), (size, size), method='bicubic', antialias=True)
    if random_flip:
      flip = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), index])) < 0.5
      img = tf.cond(flip, lambda: img[:, ::-1], lambda: img)
    img = tf.clip_by_value(tf.round(img), 0.0, 255.0) / 127.5 - 1.0
    label = tf.cast(ex[d.label_key], tf.int32) if has_label else tf.constant(0, tf.int32)
    return {'image': img, 'label': label}

  return preprocess


def tfds_eval_batches(d, batch_size: int, max_images: int = 0):
  """The first ``max_images`` examples of d.split in file order, no flips (evaluation)."""
  tf = import_tf()
  import tensorflow_datasets as tfds
  builder = _builder(tfds, d)
  ds = _as_dataset(tfds, builder, d, d.split, shuffle_files=False)
  if max_images > 0:
    ds = ds.take(max_images)
  ds = ds.enumerate().map(_preprocess_fn(tf, d, builder, 0, False),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for b in tfds.as_numpy(ds.batch(batch_size).prefetch(2)):
    yield {k: np.asarray(v) for k, v in b.items()}


def tfds_batches(d, global_batch: int, seed: int, start_step: int, process_index: int,
                 process_count: int):
  tf = import_tf()
  import tensorflow_datasets as tfds
  if global_batch % process_count:
    raise DataError(f'global batch {global_batch} is not divisible by {process_count} processes')
  local = global_batch // process_count
  split = tfds.even_splits(d.split, n=process_count, drop_remainder=True)[process_index]
  builder = _builder(tfds, d)
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1)
  ds = _as_dataset(tfds, builder, d, split, shuffle_files=True, read_config=read_config)
  preprocess = _preprocess_fn(tf, d, builder, seed, d.random_flip)
  ds = ds.repeat().shuffle(10_000, seed=seed, reshuffle_each_iteration=True).enumerate()
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local, drop_remainder=True).skip(start_step).prefetch(2)
  return (({k: np.asarray(v) for k, v in b.items()}) for b in tfds.as_numpy(ds))
