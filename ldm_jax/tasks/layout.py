"""Layout-to-image (layout2img-openimages256, COCO): boxes -> tokens (``tasks.layout_tokens``) ->
the BERTEmbedder transformer without a tokenizer, cross-attention. Raw condition: int32 tokens
[B, max_seq_len]. The layout without objects is the unconditional input. Training shuffles each
image's boxes, as the reference."""

from __future__ import annotations

import numpy as np

from ldm_jax.tasks import layout_tokens
from ldm_jax.tasks.base import TaskInputError, repeat
from ldm_jax.tasks.text import TextToImage


class LayoutToImage(TextToImage):
  name = 'layout'
  clip_scored = False
  annotations = ('boxes',)
  input_args = ('layout',)
  input_help = {
    'layout': 'Layout JSON: [{"class": 12, "bbox": [x, y, w, h]}, ...] (relative coordinates; '
    'layout-to-image models).'
  }
  needs_images = True  # the boxes follow each image's crop and flip

  def user_condition(self, num, layout=None):
    """A layout JSON file (see ``tasks.layout_tokens``) or a list of objects -> tokens
    [num, max_seq_len]."""
    cs = self.cs
    try:
      if isinstance(layout, str):
        return layout_tokens.load_layouts(layout, num, cs.max_seq_len, cs.vocab_size), None, None
      return (
        repeat(layout_tokens.tokenize_for(layout, cs.max_seq_len, cs.vocab_size), num),
        None,
        None,
      )
    except (OSError, ValueError) as e:
      raise TaskInputError(str(e)) from None

  def training_condition(self, examples, positions):
    cs = self.cs
    max_objects, _ = layout_tokens.layout_geometry(cs.max_seq_len)
    out = []
    for e, p in zip(examples, positions):
      boxes = e['boxes']
      objects = [boxes[i] for i in self.rng(p).permutation(len(boxes))][:max_objects]
      out.append(layout_tokens.tokenize_for(objects, cs.max_seq_len, cs.vocab_size))
    return np.stack(out)

  def null_condition(self, cond):
    return repeat(layout_tokens.empty_layout(self.cs.max_seq_len, self.cs.vocab_size), len(cond))

  def tiles(self, cond, height, width):
    from ldm_jax.tasks.tiles import box_tiles

    return box_tiles(np.asarray(cond), height, width, self.cs.vocab_size)
