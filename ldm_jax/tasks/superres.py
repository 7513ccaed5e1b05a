"""Super-resolution (bsr_sr, SR3-style ImageNet 64 -> 256): the low-resolution image, in [-1, 1],
is concatenated to the latent as is (cond_stage 'identity'), so the output is f times its size.
Raw condition: [B, S/f, S/f, 3]. Training degrades each image as config.data.degradation says
(``tasks.degradations``)."""

from __future__ import annotations

import numpy as np

from ldm_jax.config import downsampling_factor
from ldm_jax.images import resize_nearest_torch, to_model_range, to_uint8
from ldm_jax.tasks.base import Task, TaskInputError, read_model_image, repeat
from ldm_jax.tasks.degradations import degrade


class SuperResolution(Task):
  name = 'superres'
  upsamples = True
  encoder_kinds = ('identity',)
  conditioning_key = 'concat'
  input_args = ('lr_image',)
  input_help = {'lr_image': 'Low-resolution image (super-resolution models).'}
  needs_images = True  # the input is made from each image's pixels

  def user_condition(self, num, lr_image=None):
    """A low-resolution image (path or array) -> [num, h, w, 3] in [-1, 1], as the reference's
    LR_image; a batch of ``num`` images (an array [num, h, w, 3]) gives each sample its own."""
    if not isinstance(lr_image, str) and np.ndim(lr_image) == 4:
      if len(lr_image) != num:
        raise TaskInputError(f'got {len(lr_image)} low-resolution images for {num} samples')
      cond = np.stack([read_model_image(im) for im in lr_image])
    else:
      cond = repeat(read_model_image(lr_image), num)
    f = downsampling_factor(self.config)
    return cond, (cond.shape[1] * f, cond.shape[2] * f), None

  def training_condition(self, examples, positions):
    f, how = downsampling_factor(self.config), self.config.data.degradation
    return to_model_range(
      np.stack([degrade(e['image'], f, how, self.rng(p)) for e, p in zip(examples, positions)])
    )

  def tiles(self, cond, height, width):
    return np.asarray(resize_nearest_torch(to_uint8(np.asarray(cond)), (height, width)))
