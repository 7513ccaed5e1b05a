"""Pictures of conditions for the tasks' grid tiles: text (captions, classes), boxes, label maps
in colour. All return uint8 [N, height, width, 3]."""

from __future__ import annotations

import textwrap

import numpy as np

from ldm_jax.tasks.layout_tokens import detokenize_layout


def palette(n: int) -> np.ndarray:
  """A fixed colour per class (0 = black)."""
  rng = np.random.default_rng(1234)
  colours = rng.integers(40, 256, (max(n, 1), 3)).astype(np.uint8)
  colours[0] = 0
  return colours


def text_tiles(texts, height: int, width: int) -> np.ndarray:
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  tiles = []
  for text in texts:
    im = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    chars = max(4, width // 6)
    lines = textwrap.wrap(text, chars)[: max(1, height // 11)] or ['']
    for i, line in enumerate(lines):
      draw.text((2, 1 + 11 * i), line, fill=(0, 0, 0), font=font)
    tiles.append(np.asarray(im))
  return np.stack(tiles)


def box_tiles(layouts, height: int, width: int, no_tokens: int) -> np.ndarray:
  from PIL import Image, ImageDraw, ImageFont

  font = ImageFont.load_default()
  colours = palette(min(no_tokens, 4096))
  tiles = []
  for tokens in layouts:
    im = Image.new('RGB', (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(im)
    for obj in detokenize_layout(tokens, no_tokens):
      x, y, w, h = obj['bbox']
      colour = tuple(int(v) for v in colours[(obj['class'] % (len(colours) - 1)) + 1])
      draw.rectangle(
        [x * (width - 1), y * (height - 1), (x + w) * (width - 1), (y + h) * (height - 1)],
        outline=colour,
      )
      draw.text((x * (width - 1) + 1, y * (height - 1)), str(obj['class']), fill=colour, font=font)
    tiles.append(np.asarray(im))
  return np.stack(tiles)


def segmentation_tiles(seg, n_classes: int) -> np.ndarray:
  seg = np.asarray(seg)
  if seg.ndim == 4:  # one-hot
    seg = seg.argmax(-1)
  return palette(n_classes)[seg]
