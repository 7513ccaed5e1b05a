"""Pictures of conditions, to show next to samples (training grids, sample.py): the caption or
class as text, the low-resolution input, the masked input (hole in grey), the boxes, the label map
in colour. All return uint8 [N, S, S(or W), 3] tiles of the sample's size."""
from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ldm_jax import layout as layout_lib
from ldm_jax.generate import to_uint8
from ldm_jax.models import resize_nearest_torch


def _palette(n: int) -> np.ndarray:
  """A fixed colour per class (0 = black)."""
  rng = np.random.default_rng(1234)
  colours = rng.integers(40, 256, (max(n, 1), 3)).astype(np.uint8)
  colours[0] = 0
  return colours


def text_tiles(texts, height: int, width: int) -> np.ndarray:
  font = ImageFont.load_default()
  tiles = []
  for text in texts:
    im = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    chars = max(4, width // 6)
    lines = textwrap.wrap(text, chars)[:max(1, height // 11)] or ['']
    for i, line in enumerate(lines):
      draw.text((2, 1 + 11 * i), line, fill=(0, 0, 0), font=font)
    tiles.append(np.asarray(im))
  return np.stack(tiles)


def box_tiles(layouts, height: int, width: int, no_tokens: int) -> np.ndarray:
  font = ImageFont.load_default()
  palette = _palette(no_tokens) if no_tokens < 4096 else _palette(4096)
  tiles = []
  for tokens in layouts:
    im = Image.new('RGB', (width, height), (40, 40, 40))
    draw = ImageDraw.Draw(im)
    for obj in layout_lib.detokenize_layout(tokens, no_tokens):
      x, y, w, h = obj['bbox']
      colour = tuple(int(v) for v in palette[(obj['class'] % (len(palette) - 1)) + 1])
      draw.rectangle([x * (width - 1), y * (height - 1), (x + w) * (width - 1),
                      (y + h) * (height - 1)], outline=colour)
      draw.text((x * (width - 1) + 1, y * (height - 1)), str(obj['class']), fill=colour, font=font)
    tiles.append(np.asarray(im))
  return np.stack(tiles)


def segmentation_tiles(seg, n_classes: int) -> np.ndarray:
  seg = np.asarray(seg)
  if seg.ndim == 4:  # one-hot
    seg = seg.argmax(-1)
  return _palette(n_classes)[seg]


def condition_tiles(config, cond, height: int, width: int) -> np.ndarray | None:
  """Tiles showing each example's raw condition (``LatentDiffusion`` docstring), or None for
  unconditional models."""
  from ldm_jax.data.conditions import task_of
  task, cs = task_of(config), config.cond_stage
  if task == 'unconditional':
    return None
  if task == 'class':
    return text_tiles([f'class {int(c)}' for c in np.asarray(cond)], height, width)
  if task == 'text':
    from ldm_jax.tasks import _tokenizer
    tok = _tokenizer(cs.tokenizer)
    texts = tok.batch_decode(np.asarray(cond).tolist(), skip_special_tokens=True)
    return text_tiles(texts, height, width)
  if task == 'layout':
    return box_tiles(np.asarray(cond), height, width, cs.vocab_size)
  if task == 'superres':
    return np.asarray(resize_nearest_torch(to_uint8(cond), (height, width)))
  if task == 'inpainting':
    masked, mask = np.asarray(cond['masked_image']), np.asarray(cond['mask']) > 0
    return np.asarray(to_uint8(np.where(mask, 0.0, masked)))  # the hole in mid grey
  tiles = segmentation_tiles(cond, cs.in_channels)
  return np.asarray(resize_nearest_torch(tiles, (height, width)))
