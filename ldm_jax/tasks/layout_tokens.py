"""Bounding-box layouts as tokens for the layout-to-image model (layout2img-openimages256).

The released model reads 92 tokens from a vocabulary of 8192, made by taming-transformers'
``ObjectsBoundingBoxConditionalBuilder`` (the OpenImagesBBox data module that configured it was never
published; its settings follow from the config: 92 = 30 objects x 3 tokens + 2 crop tokens, so 30
objects and ``encode_crop``). Each object is (class, top-left corner, bottom-right corner); a corner
(x, y) in [0, 1] is one token on a 90 x 90 grid (90 = int(sqrt(8192))): round(y * 89) * 90 +
round(x * 89). Missing objects are (8191, 8191, 8191), the "none" token; the last two tokens are the
crop, (0, 0, 1, 1) = the full image. OpenImages class numbers are the 601 boxable classes in the
order of ``class-descriptions-boxable.csv``.

A layout file (``sample.py --layout``) is JSON: a list of objects
``{"class": 12, "bbox": [x, y, w, h]}`` with x, y, w, h relative to the image (0..1), or a list of
such lists (one layout per sample).
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

NO_TOKENS = 8192
MAX_OBJECTS = 30


def _grid(no_tokens: int) -> int:
  return int(math.sqrt(no_tokens))


def coordinate_token(x: float, y: float, no_tokens: int = NO_TOKENS) -> int:
  n = _grid(no_tokens)
  return int(round(y * (n - 1))) * n + int(round(x * (n - 1)))


def tokenize_layout(
  objects: Sequence[dict],
  no_tokens: int = NO_TOKENS,
  max_objects: int = MAX_OBJECTS,
  encode_crop: bool = True,
) -> np.ndarray:
  """One layout -> int32 [max_objects * 3 (+ 2)] tokens. Objects are taken in the given order
  (the reference shuffles them during training); boxes are clipped to the image."""
  none = no_tokens - 1
  if len(objects) > max_objects:
    raise ValueError(f'a layout holds at most {max_objects} objects, got {len(objects)}')
  tokens = []
  for i, obj in enumerate(objects):
    try:
      cls, (x, y, w, h) = int(obj['class']), (float(v) for v in obj['bbox'])
    except (KeyError, TypeError, ValueError):
      raise ValueError(
        f'layout object {i} must look like {{"class": 12, "bbox": [x, y, w, h]}} '
        f'(relative coordinates), got {obj!r}'
      ) from None
    if not 0 <= cls < none:
      raise ValueError(f'layout object {i}: class {cls} is outside 0..{none - 1}')
    if w <= 0 or h <= 0:
      raise ValueError(f'layout object {i}: bbox width and height must be > 0, got {w}, {h}')
    x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    x1, y1 = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    tokens += [cls, coordinate_token(x0, y0, no_tokens), coordinate_token(x1, y1, no_tokens)]
  tokens += [none] * (3 * max_objects - len(tokens))
  if encode_crop:
    tokens += [coordinate_token(0.0, 0.0, no_tokens), coordinate_token(1.0, 1.0, no_tokens)]
  return np.asarray(tokens, np.int32)


def layout_geometry(seq_len: int) -> tuple[int, bool]:
  """(objects, encode_crop) of a token sequence length: 3 tokens per object, plus 2 crop tokens
  when the length allows (92 -> 30 objects + crop)."""
  encode_crop = (seq_len - 2) % 3 == 0
  return ((seq_len - 2) // 3 if encode_crop else seq_len // 3), encode_crop


def tokenize_for(objects, seq_len: int, no_tokens: int = NO_TOKENS) -> np.ndarray:
  """One layout -> the ``seq_len`` tokens a model with that sequence length reads."""
  max_objects, encode_crop = layout_geometry(seq_len)
  return tokenize_layout(objects, no_tokens, max_objects, encode_crop)


def load_layouts(path: str, num: int, seq_len: int, no_tokens: int = NO_TOKENS) -> np.ndarray:
  """A layout JSON file -> int32 [num, seq_len] (one layout repeated, or one per sample, cycled)."""
  with open(path) as f:
    data = json.load(f)
  if not isinstance(data, list):
    raise ValueError(f'{path}: a layout file holds a JSON list of objects (or of layouts)')
  layouts = data if data and all(isinstance(d, list) for d in data) else [data]
  tokens = np.stack([tokenize_for(l, seq_len, no_tokens) for l in layouts])
  if tokens.shape[1] != seq_len:
    raise ValueError(f'layouts tokenise to {tokens.shape[1]} tokens, the model reads {seq_len}')
  return tokens[np.arange(num) % len(tokens)]


def empty_layout(seq_len: int, no_tokens: int = NO_TOKENS) -> np.ndarray:
  """The token sequence of a layout without objects (the "unconditional" input for guidance)."""
  return tokenize_for([], seq_len, no_tokens)


def detokenize_layout(tokens: np.ndarray, no_tokens: int = NO_TOKENS) -> list[dict]:
  """Tokens (one layout) -> objects {'class', 'bbox': [x, y, w, h]} (grid-quantised), for display."""
  n, none = _grid(no_tokens), no_tokens - 1
  tokens = [int(t) for t in np.asarray(tokens)]
  objects = []
  for i in range(0, len(tokens) - 2, 3):
    cls, a, b = tokens[i : i + 3]
    if cls == none:
      continue
    (y0, x0), (y1, x1) = divmod(a, n), divmod(b, n)
    objects.append(
      {'class': cls, 'bbox': [x0 / (n - 1), y0 / (n - 1), (x1 - x0) / (n - 1), (y1 - y0) / (n - 1)]}
    )
  return objects
