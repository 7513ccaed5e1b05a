"""Inpainting training masks in the manner of LaMa's mask generators (Suvorov et al. 2022):
large irregular strokes (thick polylines with round joints) and boxes, mixed. Sizes are fractions
of the image side, LaMa's 256-pixel settings divided by 256. 1 = the region to fill."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

STROKES = dict(
  min_times=1, max_times=5, max_vertices=5, max_angle=4.0, max_len=200 / 256, max_width=100 / 256
)  # LaMa "thick" irregular masks
BOXES = dict(min_times=1, max_times=4, margin=10 / 256, min_size=30 / 256, max_size=150 / 256)


def stroke_mask(size: int, rng: np.random.Generator, p=STROKES) -> np.ndarray:
  im = Image.new('L', (size, size), 0)
  draw = ImageDraw.Draw(im)
  for _ in range(int(rng.integers(p['min_times'], p['max_times'] + 1))):
    x, y = rng.integers(0, size, 2)
    for _ in range(int(rng.integers(1, p['max_vertices'] + 1))):
      angle = 0.01 + rng.uniform(0, p['max_angle'])
      if rng.random() < 0.5:
        angle = 2 * np.pi - angle
      length = 10 / 256 * size + rng.uniform(0, p['max_len'] * size)
      width = max(1, int(5 / 256 * size + rng.uniform(0, p['max_width'] * size)))
      nx = int(np.clip(x + length * np.sin(angle), 0, size - 1))
      ny = int(np.clip(y + length * np.cos(angle), 0, size - 1))
      draw.line([(int(x), int(y)), (nx, ny)], fill=255, width=width)
      r = width // 2
      draw.ellipse([int(x) - r, int(y) - r, int(x) + r, int(y) + r], fill=255)
      x, y = nx, ny
  return (np.asarray(im) > 0).astype(np.float32)


def box_mask(size: int, rng: np.random.Generator, p=BOXES) -> np.ndarray:
  m = np.zeros((size, size), np.float32)
  margin = int(p['margin'] * size)
  lo = max(1, int(p['min_size'] * size))
  hi = max(lo, min(int(p['max_size'] * size), size - 2 * margin - 1))
  for _ in range(int(rng.integers(p['min_times'], p['max_times'] + 1))):
    bw, bh = rng.integers(lo, hi + 1, 2)
    x0 = int(rng.integers(margin, max(margin + 1, size - margin - bw + 1)))
    y0 = int(rng.integers(margin, max(margin + 1, size - margin - bh + 1)))
    m[y0 : y0 + bh, x0 : x0 + bw] = 1.0
  return m


def random_mask(size: int, rng: np.random.Generator, kind: str = 'mixed') -> np.ndarray:
  """float32 {0, 1} [size, size]: 'strokes', 'boxes' or 'mixed' (either, with equal probability).
  Never empty and never the whole image."""
  for _ in range(100):
    which = kind if kind != 'mixed' else ('strokes' if rng.random() < 0.5 else 'boxes')
    if which not in ('strokes', 'boxes'):
      raise ValueError(f"config.data.mask={kind!r}; expected 'strokes', 'boxes' or 'mixed'")
    m = stroke_mask(size, rng) if which == 'strokes' else box_mask(size, rng)
    if 0 < m.mean() < 1:
      return m
  raise RuntimeError(f'could not draw a usable {kind} mask of size {size}')
