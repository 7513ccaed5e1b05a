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
from ldm_jax.data.degradations import degrade
from ldm_jax.data.masks import random_mask
from ldm_jax.data.preprocess import to_model_range
from ldm_jax.data.sources import DataError

TASKS = ('unconditional', 'class', 'text', 'layout', 'superres', 'inpainting', 'semantic')
# The annotation each task reads from a source (besides the image and label).
ANNOTATIONS = {'text': ('caption',), 'layout': ('boxes',), 'semantic': ('segmentation',)}


def task_of(config) -> str:
  """The task a config trains, from its conditioning kind."""
  cs = config.cond_stage
  return {'none': 'unconditional', 'class': 'class', 'rescaler': 'semantic',
          'first_stage': 'inpainting', 'identity': 'superres',
          'bert': 'text' if cs.use_tokenizer else 'layout'}[cs.kind]


def downsampling(config) -> int:
  return 2**(len(config.first_stage.ch_mult) - 1)


class ConditionMaker:
  """examples (dicts from a source) + their stream positions -> the batch's raw condition."""

  def __init__(self, config):
    self.config, self.task = config, task_of(config)
    cs = config.cond_stage
    if self.task == 'text':
      from ldm_jax.tasks import _tokenizer
      self.tokenizer = _tokenizer(cs.tokenizer)
    if self.task == 'layout':
      self.encode_crop = (cs.max_seq_len - 2) % 3 == 0
      self.max_objects = (cs.max_seq_len - 2) // 3 if self.encode_crop else cs.max_seq_len // 3

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
        out.append(layout_lib.tokenize_layout(objects, c.cond_stage.vocab_size, self.max_objects,
                                              self.encode_crop))
      return np.stack(out)
    if task == 'superres':
      f = downsampling(c)
      return to_model_range(np.stack([degrade(e['image'], f, c.data.degradation, rng)
                                      for e, rng in zip(examples, rngs)]))
    if task == 'inpainting':
      size = examples[0]['image'].shape[0]
      masks = np.stack([random_mask(size, rng, c.data.mask) for rng in rngs])[..., None]
      images = np.stack([e['image'] for e in examples]).astype(np.float32) / 255.0
      return {'masked_image': (1.0 - masks) * images * 2 - 1, 'mask': masks * 2 - 1}
    if task == 'semantic':
      seg = np.stack([e['segmentation'] for e in examples]).astype(np.int32)
      n = c.cond_stage.in_channels
      if seg.min() < 0 or seg.max() >= n:
        raise DataError(f'segmentation classes {seg.min()}..{seg.max()} are outside 0..{n - 1}: '
                        f'config.cond_stage.in_channels={n} is the number of classes')
      return seg
    raise DataError(f'no training condition for task {task!r}')
