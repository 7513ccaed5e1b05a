"""The raw condition of each training example, by task (what ``LatentDiffusion.conditioning`` reads):

  class          the label                                   int32 []
  text           one of the image's captions, BERT tokens    int32 [max_seq_len]
  layout         the boxes (shuffled, as the reference), tokens            int32 [max_seq_len]
  superres       the degraded image (bicubic or BSR-light), [-1, 1]        [S/f, S/f, 3]
  inpainting     a LaMa-style mask: {'masked_image': [S, S, 3], 'mask': [S, S, 1] in {-1, 1}}
  semantic       the class map (one-hot on the device, in ``conditioning``)  int32 [S, S]

Randomness (caption choice, box order, degradation, mask) comes from a generator seeded by
(seed, position in the data stream), so a resumed run sees the same conditions.
"""
from __future__ import annotations

import numpy as np

from ldm_jax import layout as layout_lib
from ldm_jax.config import downsampling_factor
from ldm_jax.data.degradations import degrade
from ldm_jax.data.masks import random_mask
from ldm_jax.data.preprocess import to_model_range
from ldm_jax.data.sources import DataError
from ldm_jax.tasks import masked_input

# The annotation each task reads from a source (besides the image and label).
ANNOTATIONS = {'text': ('caption',), 'layout': ('boxes',), 'semantic': ('segmentation',)}


def task_of(config) -> str:
  """The task a config trains, from its conditioning kind."""
  cs = config.cond_stage
  return {'none': 'unconditional', 'class': 'class', 'rescaler': 'semantic',
          'first_stage': 'inpainting', 'identity': 'superres',
          'bert': 'text' if cs.use_tokenizer else 'layout'}[cs.kind]


class ConditionMaker:
  """examples (dicts from a source) + their stream positions -> the batch's raw condition."""

  def __init__(self, config):
    self.config, self.task = config, task_of(config)
    cs = config.cond_stage
    if self.task == 'text':
      from ldm_jax.tasks import _tokenizer
      self.tokenizer = _tokenizer(cs.tokenizer)
    if self.task == 'layout':
      self.max_objects, _ = layout_lib.layout_geometry(cs.max_seq_len)

  def rng(self, position: int) -> np.random.Generator:
    return np.random.default_rng([self.config.seed, 2, position])

  def __call__(self, examples: list[dict], positions: list[int]):
    c, task = self.config, self.task
    if task == 'class':
      return np.array([e['label'] for e in examples], np.int32)
    rngs = [self.rng(p) for p in positions]
    if task == 'text':
      from ldm_jax.tokenizer import tokenize
      captions = []
      for e, rng in zip(examples, rngs):
        caps = [e['caption']] if isinstance(e['caption'], str) else list(e['caption'])
        captions.append(caps[int(rng.integers(len(caps)))])
      return tokenize(self.tokenizer, captions, c.cond_stage.max_seq_len)
    if task == 'layout':
      out = []
      for e, rng in zip(examples, rngs):
        objects = [e['boxes'][i] for i in rng.permutation(len(e['boxes']))][:self.max_objects]
        out.append(layout_lib.tokenize_for(objects, c.cond_stage.max_seq_len,
                                           c.cond_stage.vocab_size))
      return np.stack(out)
    if task == 'superres':
      f = downsampling_factor(c)
      return to_model_range(np.stack([degrade(e['image'], f, c.data.degradation, rng)
                                      for e, rng in zip(examples, rngs)]))
    if task == 'inpainting':
      size = examples[0]['image'].shape[0]
      masks = np.stack([random_mask(size, rng, c.data.mask) for rng in rngs])[..., None]
      return masked_input(np.stack([e['image'] for e in examples]), masks)
    if task == 'semantic':
      seg = np.stack([e['segmentation'] for e in examples]).astype(np.int32)
      n = c.cond_stage.in_channels
      if seg.min() < 0 or seg.max() >= n:
        raise DataError(f'segmentation classes {seg.min()}..{seg.max()} are outside 0..{n - 1}: '
                        f'config.cond_stage.in_channels={n} is the number of classes')
      return seg
    raise DataError(f'no training condition for task {task!r}')
