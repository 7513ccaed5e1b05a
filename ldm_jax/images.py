"""Image grids and PNG files."""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+pad)+pad, nrow*(W+pad)+pad, C] grid."""
  n, h, w, c = images.shape
  nrow = nrow or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / nrow))
  grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), np.uint8)
  for i, im in enumerate(images):
    r, col = divmod(i, nrow)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = im
  return grid


def save_png(path: str, image: np.ndarray) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
