"""Reference preprocessing (ldm/data/lsun.py): centre crop to a square, bicubic resize, random
horizontal flip, scale to [-1, 1]; and for aspect-ratio buckets (data.buckets), resize to cover a
(height, width) and centre crop."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ldm_jax.images import pil_to_rgb


def center_crop_resize(image: Image.Image, size: int) -> np.ndarray:
  """PIL image (any mode: images.pil_to_rgb) -> uint8 [size, size, 3]."""
  img = pil_to_rgb(image)
  h, w = img.shape[:2]
  crop = min(h, w)
  img = img[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
  if img.shape[0] != size:
    img = np.asarray(Image.fromarray(img).resize((size, size), resample=Image.BICUBIC))
  return img


def cover_crop(image: Image.Image, hw: tuple[int, int]):
  """PIL image -> (uint8 [h, w, 3] resized (bicubic) to cover ``hw`` and centre-cropped to it,
  its original (height, width), the crop's (top, left) in the resized image)."""
  img = pil_to_rgb(image)
  (h0, w0), (h, w) = img.shape[:2], hw
  scale = max(h / h0, w / w0)
  rh, rw = max(h, round(h0 * scale)), max(w, round(w0 * scale))
  if (rh, rw) != (h0, w0):
    img = np.asarray(Image.fromarray(img).resize((rw, rh), resample=Image.BICUBIC))
  top, left = round((rh - h) / 2.0), round((rw - w) / 2.0)
  return img[top : top + h, left : left + w], (h0, w0), (top, left)


def crop_resize_nearest(labels: np.ndarray, size: int) -> np.ndarray:
  """A class map [H, W] through the same centre crop as the image, resized with nearest neighbour
  (class indices must not be interpolated)."""
  h, w = labels.shape[:2]
  crop = min(h, w)
  labels = labels[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
  if crop != size:
    idx = np.minimum((np.arange(size) + 0.5) * crop / size, crop - 1).astype(np.int64)
    labels = labels[idx][:, idx]
  return labels


def crop_boxes(objects, hw: tuple[int, int], flip: bool = False) -> list[dict]:
  """Layout objects ({'class', 'bbox': [x, y, w, h]} relative to the full H x W image) -> the same
  relative to the centre square crop (clipped; objects left with no area are dropped), mirrored
  if ``flip``."""
  h, w = hw
  crop = min(h, w)
  ox, oy = (w - crop) // 2 / w, (h - crop) // 2 / h  # crop origin, relative
  sx, sy = w / crop, h / crop
  out = []
  for obj in objects:
    x, y, bw, bh = (float(v) for v in obj['bbox'])
    x0, y0 = (x - ox) * sx, (y - oy) * sy
    x1, y1 = x0 + bw * sx, y0 + bh * sy
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, 1.0), min(y1, 1.0)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
      continue
    if flip:
      x0, x1 = 1.0 - x1, 1.0 - x0
    out.append({'class': int(obj['class']), 'bbox': [x0, y0, x1 - x0, y1 - y0]})
  return out
