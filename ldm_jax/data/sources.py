"""Random-access image sources: the embedded digits and a folder of images."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

from ldm_jax.data.preprocess import center_crop_resize

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.webp')


class DataError(ValueError):
  """Bad data settings or unusable data; the message says what to fix."""


class CorruptImage(Exception):
  pass


def digits_uint8(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled handwritten digits (1,797 8x8 images, values 0..16, no download),
  upscaled bicubically to size x size RGB uint8, white digit on black; and int32 labels."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  small = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
  big = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC))
                  for im in small])
  return np.repeat(big[..., None], 3, axis=-1), digits.target.astype(np.int32)


DIGITS_TRAIN = 1500  # split 'train' = the first 1,500 digits, 'test' = the last 297 (held out)


class DigitsSource:
  key = 'image'  # what load() returns: uint8 images (a latent cache returns 'moments')

  def __init__(self, image_size: int, split: str = 'train'):
    images, labels = digits_uint8(image_size)
    parts = {'train': slice(0, DIGITS_TRAIN), 'test': slice(DIGITS_TRAIN, None), 'all': slice(None)}
    if split not in parts:
      raise DataError(f"digits split {split!r} (config.data.split): use 'train', 'test' or 'all'")
    self.images, self.labels = images[parts[split]], labels[parts[split]]

  def __len__(self):
    return len(self.labels)

  def load(self, index: int, flip: bool = False) -> tuple[np.ndarray, int]:
    image = self.images[index]
    return (image[:, ::-1] if flip else image), int(self.labels[index])


def list_images(root: str) -> list[str]:
  if not root:
    raise DataError('no image folder given: set --config.data.path=/path/to/images')
  if not os.path.isdir(root):
    raise DataError(f'image folder {root!r} does not exist (config.data.path); check the path')
  files = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    files += [os.path.join(dirpath, f) for f in sorted(filenames)
              if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.')]
  if not files:
    raise DataError(f'image folder {root!r} contains no images (looked recursively for '
                    f'{", ".join(IMAGE_EXTENSIONS)}); point config.data.path at your images')
  return files


class FolderSource:
  """Every image under ``root`` (recursive, sorted). Labels: index of the top-level subfolder in
  sorted order if ``labels_from_subdirs``, else 0."""

  key = 'image'

  def __init__(self, root: str, image_size: int, labels_from_subdirs: bool = False):
    self.files = list_images(root)
    self.image_size = image_size
    if labels_from_subdirs:
      top = [os.path.relpath(f, root).split(os.sep)[0] for f in self.files]
      if any(os.sep not in os.path.relpath(f, root) for f in self.files):
        raise DataError(f'labels_from_subdirs needs every image inside a class subfolder of {root!r}')
      self.class_names: Sequence[str] = sorted(set(top))
      index = {c: i for i, c in enumerate(self.class_names)}
      self.labels = np.array([index[t] for t in top], np.int32)
    else:
      self.class_names = ()
      self.labels = np.zeros(len(self.files), np.int32)

  def __len__(self):
    return len(self.files)

  def load(self, index: int, flip: bool = False) -> tuple[np.ndarray, int]:
    path = self.files[index]
    try:
      with Image.open(path) as im:
        im.load()
        image = center_crop_resize(im, self.image_size)
        return (image[:, ::-1] if flip else image), int(self.labels[index])
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for truncated/invalid files
      raise CorruptImage(f'{path}: {e}') from e
