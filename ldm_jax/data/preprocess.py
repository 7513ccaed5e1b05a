"""Reference preprocessing (ldm/data/lsun.py): centre crop to a square, bicubic resize, random
horizontal flip, scale to [-1, 1]."""
from __future__ import annotations

import numpy as np
from PIL import Image


def center_crop_resize(image: Image.Image, size: int) -> np.ndarray:
  """PIL image -> uint8 [size, size, 3]."""
  img = np.asarray(image.convert('RGB'), dtype=np.uint8)
  h, w = img.shape[:2]
  crop = min(h, w)
  img = img[(h - crop) // 2:(h + crop) // 2, (w - crop) // 2:(w + crop) // 2]
  if img.shape[0] != size:
    img = np.asarray(Image.fromarray(img).resize((size, size), resample=Image.BICUBIC))
  return img


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
  return images_uint8.astype(np.float32) / 127.5 - 1.0
