"""TFDS datasets by name (e.g. 'lsun/church_outdoor'), one disjoint even split per process.

Conditional tasks read their annotation from the feature named in config.data (nested features
with '/'): ``caption_key`` (a string or a sequence of strings, one drawn per use; coco_captions:
'captions/text'), ``boxes_key`` + ``box_labels_key`` (TFDS BBoxFeature, [N, 4] ymin, xmin, ymax,
xmax relative; coco/2017: 'objects/bbox', 'objects/label'), ``segmentation_key`` (a class map
[H, W(, 1)]). Crop and flip are applied to boxes and maps as to the image.

TensorFlow runs on the CPU only (GPUs are hidden from it so it never takes accelerator memory).
Resuming skips the examples the job has consumed (the data position stored in each checkpoint)
in the seeded stream, before decoding: the same batches, at the cost of reading past them once.
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
    raise DataError(
      f'TFDS dataset {d.name!r} split {d.split!r} could not be read: {e}. Prepare it '
      f'with `tfds build {d.name}` (some datasets need a manual download).'
    ) from e


MAX_BOXES = 100  # boxes kept per image in the TF pipeline (the layout tokenizer keeps fewer)


def _feature(features, key: str):
  for part in key.split('/'):
    features = features[part]
  return features


def _has_feature(builder, key: str) -> bool:
  try:
    _feature(builder.info.features, key)
    return True
  except (KeyError, TypeError):
    return False


def _check_features(d, builder, annotations) -> None:
  """The dataset has the features the task reads (a DataError naming the config key if not)."""
  keys = {
    'image': d.image_key,
    'caption': d.caption_key,
    'boxes': d.boxes_key,
    'segmentation': d.segmentation_key,
  }
  for what in ('image',) + tuple(annotations):
    if not keys[what] or not _has_feature(builder, keys[what]):
      raise DataError(
        f'TFDS dataset {d.name!r} has no feature {keys[what]!r} for the {what} '
        f'(config.data.{what}_key); features: {builder.info.features}'
      )
  if 'boxes' in annotations and not _has_feature(builder, d.box_labels_key):
    raise DataError(
      f'TFDS dataset {d.name!r} has no feature {d.box_labels_key!r} '
      '(config.data.box_labels_key) for the box classes'
    )


def _preprocess_fn(tf, d, builder, seed, random_flip, annotations=(), as_uint8=False):
  """(index, example) -> {'image': [-1, 1] float32 (uint8 if ``as_uint8``), 'label', annotations}:
  centre crop, bicubic resize, flip; boxes and class maps follow the crop and flip."""
  _check_features(d, builder, annotations)
  has_label = d.label_key in builder.info.features
  size = d.image_size

  def preprocess(index, ex):
    img = _feature(ex, d.image_key)
    if img.shape[-1] == 1:
      img = tf.image.grayscale_to_rgb(img)
    h, w = tf.shape(img)[0], tf.shape(img)[1]
    crop = tf.minimum(h, w)
    oy, ox = (h - crop) // 2, (w - crop) // 2
    img = tf.image.crop_to_bounding_box(img, oy, ox, crop, crop)
    img = tf.image.resize(tf.cast(img, tf.float32), (size, size), method='bicubic', antialias=True)
    flip = tf.constant(False)
    if random_flip:
      flip = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), index])) < 0.5
      img = tf.cond(flip, lambda: img[:, ::-1], lambda: img)
    img = tf.clip_by_value(tf.round(img), 0.0, 255.0)
    img = tf.cast(img, tf.uint8) if as_uint8 else img / 127.5 - 1.0
    label = tf.cast(ex[d.label_key], tf.int32) if has_label else tf.constant(0, tf.int32)
    out = {'image': img, 'label': label}
    if 'caption' in annotations:
      caps = tf.reshape(_feature(ex, d.caption_key), [-1])
      pick = tf.random.stateless_uniform(
        [],
        seed=tf.stack([tf.cast(seed, tf.int64) + 1, index]),
        maxval=tf.maximum(tf.size(caps), 1),
        dtype=tf.int32,
      )
      out['caption'] = tf.cond(tf.size(caps) > 0, lambda: caps[pick], lambda: tf.constant(''))
    geometry = (h, w, crop, oy, ox, flip)
    if 'boxes' in annotations:
      out.update(_tf_boxes(tf, ex, d, geometry))
    if 'segmentation' in annotations:
      seg = _feature(ex, d.segmentation_key)
      seg = seg[..., None] if len(seg.shape) == 2 else seg[..., :1]
      seg = tf.image.crop_to_bounding_box(seg, oy, ox, crop, crop)
      seg = tf.image.resize(seg, (size, size), method='nearest')
      seg = tf.cond(flip, lambda: seg[:, ::-1], lambda: seg)
      out['segmentation'] = tf.cast(seg[..., 0], tf.int32)
    return out

  return preprocess


def _tf_boxes(tf, ex, d, geometry) -> dict:
  """The example's boxes (normalised [y0, x0, y1, x1] in TFDS) through the centre crop and flip
  ``geometry`` = (h, w, crop, oy, ox, flip): x, y, w, h in [0, 1], padded to MAX_BOXES."""
  h, w, crop, oy, ox, flip = geometry
  b = tf.reshape(tf.cast(_feature(ex, d.boxes_key), tf.float32), [-1, 4])[:MAX_BOXES]
  cls = tf.reshape(tf.cast(_feature(ex, d.box_labels_key), tf.int32), [-1])[:MAX_BOXES]
  n0 = tf.minimum(tf.shape(b)[0], tf.shape(cls)[0])  # equal in real data
  b, cls = b[:n0], cls[:n0]
  hf, wf, cf = tf.cast(h, tf.float32), tf.cast(w, tf.float32), tf.cast(crop, tf.float32)
  y0 = tf.clip_by_value((b[:, 0] * hf - tf.cast(oy, tf.float32)) / cf, 0.0, 1.0)
  x0 = tf.clip_by_value((b[:, 1] * wf - tf.cast(ox, tf.float32)) / cf, 0.0, 1.0)
  y1 = tf.clip_by_value((b[:, 2] * hf - tf.cast(oy, tf.float32)) / cf, 0.0, 1.0)
  x1 = tf.clip_by_value((b[:, 3] * wf - tf.cast(ox, tf.float32)) / cf, 0.0, 1.0)
  x0, x1 = tf.cond(flip, lambda: (1.0 - x1, 1.0 - x0), lambda: (x0, x1))
  keep = tf.logical_and(x1 > x0, y1 > y0)
  boxes = tf.boolean_mask(tf.stack([x0, y0, x1 - x0, y1 - y0], -1), keep)
  cls = tf.boolean_mask(cls, keep)
  n = tf.shape(boxes)[0]
  return {
    'boxes': tf.pad(boxes, [[0, MAX_BOXES - n], [0, 0]]),
    'box_classes': tf.pad(cls, [[0, MAX_BOXES - n]]),
    'num_boxes': n,
  }


def _examples(batch: dict) -> list[dict]:
  """A numpy batch of the TF pipeline -> per-example dicts as the random-access sources give."""
  n = len(batch['label'])
  out = []
  for i in range(n):
    e = {'image': batch['image'][i], 'label': int(batch['label'][i])}
    if 'caption' in batch:
      e['caption'] = batch['caption'][i].decode('utf-8')
    if 'boxes' in batch:
      k = int(batch['num_boxes'][i])
      e['boxes'] = [
        {'class': int(c), 'bbox': [float(v) for v in bb]}
        for c, bb in zip(batch['box_classes'][i][:k], batch['boxes'][i][:k])
      ]
    if 'segmentation' in batch:
      e['segmentation'] = batch['segmentation'][i]
    out.append(e)
  return out


def tfds_eval_batches(
  d, batch_size: int, max_images: int = 0, annotations=(), as_examples=False, as_uint8=False
):
  """The first ``max_images`` examples of d.split in file order, no flips (evaluation), images in
  [-1, 1] (``as_uint8``: 0..255); ``as_examples``: lists of per-example dicts (uint8 images, the
  annotations) instead."""
  tf = import_tf()
  import tensorflow_datasets as tfds

  builder = _builder(tfds, d)
  ds = _as_dataset(tfds, builder, d, d.split, shuffle_files=False)
  if max_images > 0:
    ds = ds.take(max_images)
  ds = ds.enumerate().map(
    _preprocess_fn(tf, d, builder, 0, False, annotations, as_examples or as_uint8),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  for b in tfds.as_numpy(ds.batch(batch_size).prefetch(2)):
    yield _examples(b) if as_examples else {k: np.asarray(v) for k, v in b.items()}


def tfds_batches(
  config,
  global_batch: int,
  seed: int,
  start_position: int,
  process_index: int,
  process_count: int,
  conditions=None,
):
  """Per-process training batches from ``start_position`` examples into the job's stream (each
  process reads its own even split and skips start_position / process_count of its examples,
  undecoded); with ``conditions`` (the task) each batch also holds its raw condition under
  'cond'."""
  from ldm_jax.images import to_model_range

  d = config.data
  tf = import_tf()
  import tensorflow_datasets as tfds

  if global_batch % process_count:
    raise DataError(f'global batch {global_batch} is not divisible by {process_count} processes')
  local = global_batch // process_count
  split = tfds.even_splits(d.split, n=process_count, drop_remainder=True)[process_index]
  builder = _builder(tfds, d)
  read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1)
  ds = _as_dataset(tfds, builder, d, split, shuffle_files=True, read_config=read_config)
  annotations = conditions.annotations if conditions is not None else ()
  preprocess = _preprocess_fn(
    tf, d, builder, seed, d.random_flip, annotations, as_uint8=conditions is not None
  )
  ds = ds.repeat().shuffle(10_000, seed=seed, reshuffle_each_iteration=True).enumerate()
  skip = start_position // process_count
  ds = ds.skip(skip).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(2)

  def batches():
    for i, b in enumerate(tfds.as_numpy(ds)):
      if conditions is None:
        yield {k: np.asarray(v) for k, v in b.items()}
        continue
      # stream positions for the condition's randomness: unique per (position, process, example)
      base = (skip + i * local) * process_count + process_index
      positions = [base + j * process_count for j in range(local)]
      yield {
        'image': to_model_range(b['image']),
        'label': np.asarray(b['label']),
        'cond': conditions.training_condition(_examples(b), positions),
      }

  return batches()


def tfds_random_access(d) -> bool:
  """Whether d.name was prepared as ArrayRecord (``tfds build NAME --file_format=array_record``):
  then it is read by index like a folder (``TfdsSource``), else streamed through tf.data."""
  import tensorflow_datasets as tfds

  return str(getattr(_builder(tfds, d).info, 'file_format', '')).endswith('array_record')


class TfdsSource:
  """A TFDS split prepared as ArrayRecord, by index (``builder.as_data_source``): the decoded
  features go through the folder's preprocessing (PIL centre crop, bicubic resize, flip) in numpy,
  so grain's worker processes decode it without TensorFlow graphs. The data source opens lazily,
  in each process that reads it."""

  key = 'image'

  def __init__(self, d, annotations=()):
    keys = ('name', 'split', 'data_dir', 'image_key', 'label_key', 'image_size')
    keys += ('caption_key', 'boxes_key', 'box_labels_key', 'segmentation_key')
    self.d = {k: d[k] for k in keys}
    self.annotations = tuple(annotations)
    self._source = None
    self._len = len(self._data())

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def _data(self):
    if self._source is None:
      import tensorflow_datasets as tfds

      d = _Settings(self.d)
      self._source = _as_data_source(_builder(tfds, d), d)
    return self._source

  def __len__(self):
    return self._len

  def load(self, index: int, flip: bool = False) -> dict:
    from PIL import Image

    from ldm_jax.data.preprocess import center_crop_resize, crop_boxes, crop_resize_nearest

    d, ex = self.d, self._data()[index]
    img = np.asarray(_feature(ex, d['image_key']))
    hw = img.shape[:2]
    image = center_crop_resize(
      Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img), d['image_size']
    )
    label = ex.get(d['label_key'], 0)
    example = {'image': image[:, ::-1] if flip else image, 'label': int(np.asarray(label))}
    if 'caption' in self.annotations:
      caps = np.asarray(_feature(ex, d['caption_key']), dtype=object).reshape(-1)
      caps = [c.decode('utf-8') if isinstance(c, bytes) else str(c) for c in caps]
      example['caption'] = caps or ['']
    if 'boxes' in self.annotations:
      b = np.asarray(_feature(ex, d['boxes_key']), np.float32).reshape(-1, 4)[:MAX_BOXES]
      cls = np.asarray(_feature(ex, d['box_labels_key'])).reshape(-1)[: len(b)]
      objects = [
        {'class': int(c), 'bbox': [x0, y0, x1 - x0, y1 - y0]} for c, (y0, x0, y1, x1) in zip(cls, b)
      ]
      example['boxes'] = crop_boxes(objects, hw, flip)
    if 'segmentation' in self.annotations:
      seg = np.asarray(_feature(ex, d['segmentation_key']))
      seg = crop_resize_nearest(
        (seg[..., 0] if seg.ndim == 3 else seg).astype(np.int32), d['image_size']
      )
      example['segmentation'] = seg[:, ::-1] if flip else seg
    return example


class _Settings(dict):
  __getattr__ = dict.__getitem__


def _as_data_source(builder, d):
  try:
    return builder.as_data_source(split=d.split)
  except Exception as e:  # not prepared, ...
    raise DataError(
      f'TFDS dataset {d.name!r} split {d.split!r} could not be opened for random access: {e}. '
      f'Prepare it with `tfds build {d.name} --file_format=array_record`.'
    ) from e
