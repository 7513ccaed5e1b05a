"""Random-access image sources: the embedded digits and a folder of images.

``load(index, flip)`` returns an example dict: ``image`` (uint8 [S, S, 3], centre-cropped, resized,
flipped), ``label`` (int) and, where the source has them, the annotations of conditional tasks, in
the same crop and flip as the image: ``caption`` (str), ``boxes`` (a layout: list of
{'class', 'bbox': [x, y, w, h] relative}), ``segmentation`` (int32 [S, S] class map).
"""

from __future__ import annotations

import io
import json
import os
from typing import Sequence

import numpy as np
from PIL import Image

from ldm_jax import storage
from ldm_jax.data.preprocess import center_crop_resize, cover_crop, crop_boxes, crop_resize_nearest
from ldm_jax.errors import UserError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp')


class DataError(UserError):
  """Bad data settings or unusable data; the message says what to fix."""


class CorruptImage(Exception):
  pass


def digits_uint8(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled handwritten digits (1,797 8x8 images, values 0..16, no download),
  upscaled bicubically to size x size RGB uint8, white digit on black; and int32 labels."""
  from sklearn.datasets import load_digits

  digits = load_digits()
  small = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
  big = np.stack(
    [np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in small]
  )
  return np.repeat(big[..., None], 3, axis=-1), digits.target.astype(np.int32)


DIGITS_TRAIN = 1500  # split 'train' = the first 1,500 digits, 'test' = the last 297 (held out)


DIGIT_NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
_CAPTIONS = (
  'a handwritten digit {name}',
  'the number {name}, written by hand',
  'a white {name} on a black background',
  'digit {digit}',
)


def digit_caption(label: int, variant: int = 0) -> str:
  """The digits' captions (text-to-image demo): a few phrasings that all name the digit."""
  return _CAPTIONS[variant % len(_CAPTIONS)].format(name=DIGIT_NAMES[label], digit=label)


class DigitsSource:
  """The embedded digits, with annotations derived from each image for the conditional demos:
  captions naming the digit, one box around its ink (class = the digit), and a segmentation map
  (0 = background, 1 + digit = ink, so 11 classes)."""

  key = 'image'  # what load() returns: uint8 images (a latent cache returns 'moments')

  def __init__(self, image_size: int, split: str = 'train'):
    images, labels = digits_uint8(image_size)
    parts = {'train': slice(0, DIGITS_TRAIN), 'test': slice(DIGITS_TRAIN, None), 'all': slice(None)}
    if split not in parts:
      raise DataError(f"digits split {split!r} (config.data.split): use 'train', 'test' or 'all'")
    self.images, self.labels = images[parts[split]], labels[parts[split]]

  def __len__(self):
    return len(self.labels)

  def load(self, index: int, flip: bool = False) -> dict:
    image = self.images[index]
    image = image[:, ::-1] if flip else image
    label = int(self.labels[index])
    ink = image[..., 0] >= 128
    ys, xs = np.nonzero(ink)
    size = image.shape[0]
    boxes = []
    if len(xs):
      x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
      boxes = [{'class': label, 'bbox': [x0 / size, y0 / size, (x1 - x0) / size, (y1 - y0) / size]}]
    captions = [digit_caption(label, v) for v in range(len(_CAPTIONS))]
    return {
      'image': image,
      'label': label,
      'caption': captions,
      'boxes': boxes,
      'segmentation': np.where(ink, label + 1, 0).astype(np.int32),
    }


def list_images(root: str) -> list[str]:
  if not root:
    raise DataError('no image folder given: set --config.data.path=/path/to/images')
  if not storage.isdir(root):
    raise DataError(f'image folder {root!r} does not exist (config.data.path); check the path')
  files = []
  for dirpath, _, filenames in storage.walk(root):
    files += [
      storage.join(dirpath, f)
      for f in filenames
      if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')
    ]
  if not files:
    raise DataError(
      f'image folder {root!r} contains no images (looked recursively for '
      f'{", ".join(IMAGE_EXTENSIONS)}); point config.data.path at your images'
    )
  return files


PROBE = 16  # images whose annotation files tell which kinds a folder has


class FolderSource:
  """Every image under ``root`` (recursive, sorted). Labels: index of the top-level subfolder in
  sorted order if ``labels_from_subdirs``, else 0. Annotations are read from files next to each
  image (``a/b.jpg`` -> ``a/b.txt`` etc.), those that the task needs (``annotations``):

    caption        ``b.txt``: one caption per line (one is drawn per use)
    boxes          ``b.json``: a layout, ``[{"class": 3, "bbox": [x, y, w, h]}, ...]`` relative to
                   the uncropped image (the format of ``sample.py --layout``)
    segmentation   ``b.png`` under ``segmentation_dir`` (same relative path; a single-channel PNG of
                   class indices), else ``b_seg.png`` next to the image
  """

  key = 'image'

  def __init__(
    self,
    root: str,
    image_size: int,
    labels_from_subdirs: bool = False,
    annotations: Sequence[str] = (),
    segmentation_dir: str = '',
  ):
    self.root, self.annotations, self.segmentation_dir = root, tuple(annotations), segmentation_dir
    self.files = [f for f in list_images(root) if not f.endswith('_seg.png')]
    self.image_size = image_size
    for what in self.annotations:  # an image without one is skipped and counted (load)
      if self.files and not self.present(what):
        raise DataError(
          f'this task reads a {what} for every image, but none of the first '
          f'{len(self.files[:PROBE])} images has one (e.g. '
          f'{self._annotation_path(self.files[0], what)!r} does not exist); see FolderSource in '
          'ldm_jax/data/sources.py for the file layout'
        )
    if labels_from_subdirs:
      rel = [storage.relpath(f, root).replace(os.sep, '/') for f in self.files]
      top = [r.split('/')[0] for r in rel]
      if any('/' not in r for r in rel):
        raise DataError(
          f'labels_from_subdirs needs every image inside a class subfolder of {root!r}'
        )
      self.class_names: Sequence[str] = sorted(set(top))
      index = {c: i for i, c in enumerate(self.class_names)}
      self.labels = np.array([index[t] for t in top], np.int32)
    else:
      self.class_names = ()
      self.labels = np.zeros(len(self.files), np.int32)

  def __len__(self):
    return len(self.files)

  def present(self, what: str) -> bool:
    """Whether any of the first PROBE images has a ``what`` annotation file."""
    return any(storage.exists(self._annotation_path(f, what)) for f in self.files[:PROBE])

  def _annotation_path(self, image_path: str, what: str) -> str:
    stem = os.path.splitext(image_path)[0]
    if what == 'caption':
      return stem + '.txt'
    if what == 'boxes':
      return stem + '.json'
    if self.segmentation_dir:
      rel = os.path.splitext(storage.relpath(image_path, self.root))[0]
      return storage.join(self.segmentation_dir, rel + '.png')
    return stem + '_seg.png'

  def raw(self, index: int) -> dict:
    """The undecoded example: the image file's bytes and the annotation files' contents."""
    path = self.files[index]
    raw = {'image': storage.read_bytes(path), 'label': int(self.labels[index])}
    for what in self.annotations:
      ann = self._annotation_path(path, what)
      try:
        raw[what] = storage.read_text(ann) if what != 'segmentation' else storage.read_bytes(ann)
      except FileNotFoundError as e:
        raise FileNotFoundError(f'no {what} file {ann!r} beside it') from e
    return raw

  def open_image(self, index: int):
    """The image file, opened for reading (data.buckets reads the sizes from its header)."""
    return storage.open_file(self.files[index])

  def load(self, index: int, flip: bool = False, size=None) -> dict:
    """``size``: (height, width) to cover-crop to (data.buckets) instead of the square."""
    try:
      raw = self.raw(index)
    except OSError as e:
      raise CorruptImage(f'{self.files[index]}: {e}') from e
    return decode_example(self.files[index], raw, size or self.image_size, flip)


def decode_example(name: str, raw: dict, image_size, flip: bool) -> dict:
  """An undecoded example -> the example of ``load``: ``raw['image']`` the bytes of an image file;
  annotations as stored next to images (see FolderSource): ``caption`` text (one caption per
  line), ``boxes`` JSON text, ``segmentation`` PNG bytes. ``image_size``: the side of the square
  centre crop, or a (height, width) bucket to cover and centre-crop (data.buckets; the example
  then carries ``original_size`` and ``crop_top_left``). A file that cannot be decoded raises
  CorruptImage naming ``name``."""
  try:
    with Image.open(io.BytesIO(raw['image'])) as im:
      im.load()
      hw = (im.height, im.width)
      if isinstance(image_size, tuple):
        image, original, crop = cover_crop(im, image_size)
      else:
        image = center_crop_resize(im, image_size)
    example = {'image': image[:, ::-1] if flip else image, 'label': int(raw.get('label', 0))}
    if isinstance(image_size, tuple):
      example['original_size'], example['crop_top_left'] = original, crop
    if 'caption' in raw:
      captions = [line.strip() for line in raw['caption'].splitlines() if line.strip()]
      example['caption'] = captions or ['']
    if 'boxes' in raw:
      example['boxes'] = crop_boxes(json.loads(raw['boxes']), hw, flip)
    if 'segmentation' in raw:
      example['segmentation'] = _segmentation(name, raw['segmentation'], image_size, flip)
    return example
  except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for truncated/invalid files
    raise CorruptImage(f'{name}: {e}') from e


def _segmentation(name, data: bytes, image_size: int, flip: bool) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as im:
    if im.mode not in ('L', 'P', 'I', 'I;16'):
      raise ValueError(
        f'the segmentation of {name} is a {im.mode} image; expected a single-channel '
        'PNG of class indices'
      )
    seg = crop_resize_nearest(np.asarray(im).astype(np.int32), image_size)
  return seg[:, ::-1] if flip else seg


class JsonlSource:
  """Images listed in a JSON-lines file (``config.data.source='jsonl'``, ``path=FILE.jsonl``), one
  example per line: ``{"image": "a/b.jpg", "caption": "..." or ["...", ...], "label": 3}``
  (``caption`` and ``label`` optional; image paths relative to the file's folder, or absolute /
  URLs). The layout caption lists such as MS-COCO's 30k evaluation prompts come in."""

  key = 'image'

  def __init__(self, path: str, image_size: int, annotations: Sequence[str] = ()):
    if not storage.isfile(path):
      raise DataError(f'captions file {path!r} (config.data.path) does not exist')
    root = os.path.dirname(path) if not storage.is_url(path) else path.rsplit('/', 1)[0]
    self.rows = []
    for n, line in enumerate(storage.read_text(path).splitlines(), 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        image = row['image']
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(
          f'{path}:{n}: expected {{"image": ..., "caption": ...}}, got {line[:80]!r}'
        ) from e
      if not (storage.is_url(image) or os.path.isabs(image)):
        image = storage.join(root, image)
      self.rows.append((image, row.get('caption'), int(row.get('label', 0))))
    if not self.rows:
      raise DataError(f'{path} lists no images')
    unsupported = [a for a in annotations if a != 'caption']
    if unsupported:
      raise DataError(f'a JSONL source has images and captions only, not {unsupported[0]}')
    if 'caption' in annotations and any(c is None for _, c, _ in self.rows):
      missing = next(i for i, (_, c, _) in enumerate(self.rows) if c is None)
      raise DataError(f'{path}: line {missing + 1} has no "caption", which this task reads')
    self.image_size, self.annotations = image_size, tuple(annotations)

  def __len__(self):
    return len(self.rows)

  def open_image(self, index: int):
    return storage.open_file(self.rows[index][0])

  def load(self, index: int, flip: bool = False, size=None) -> dict:
    image, caption, label = self.rows[index]
    try:
      raw = {'image': storage.read_bytes(image), 'label': label}
    except OSError as e:
      raise CorruptImage(f'{image}: {e}') from e
    if 'caption' in self.annotations:
      raw['caption'] = caption if isinstance(caption, str) else '\n'.join(caption)
    return decode_example(image, raw, size or self.image_size, flip)
