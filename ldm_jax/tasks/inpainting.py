"""Inpainting (inpainting_big, scripts/inpaint.py): the first stage's encoding of the masked image
and the mask resized to the latent, concatenated to the latent. Raw condition:
{'masked_image': [B, H, W, 3] in [-1, 1], 'mask': [B, H, W, 1] in {-1, 1}, 1 = to fill}. Outputs
keep the known pixels (composited, as the reference). Training draws LaMa-style masks
(config.data.mask, ``tasks.masks``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ldm_jax.images import resize_nearest_torch, to_model_range, to_uint8
from ldm_jax.tasks.base import Task, TaskInputError, read_image, repeat
from ldm_jax.tasks.masks import random_mask


def masked_input(image_uint8: np.ndarray, mask01: np.ndarray) -> dict:
  """The raw condition (any leading batch axes): masked_image = (1 - mask) * image and the mask,
  both in [-1, 1] (mask 1 = to fill), as scripts/inpaint.py."""
  masked = (1.0 - mask01) * (image_uint8.astype(np.float32) / 255.0)
  return {'masked_image': masked * 2 - 1, 'mask': mask01 * 2 - 1}


def composite(samples: np.ndarray, image: np.ndarray, mask01: np.ndarray) -> np.ndarray:
  """Inpainting output as the reference composites it: (1 - mask) image + mask sample, in [-1, 1]."""
  return (1.0 - mask01) * image + mask01 * samples


class Inpainting(Task):
  name = 'inpainting'
  fills_a_mask = True
  encoder_kinds = ('first_stage',)
  conditioning_key = 'concat'
  input_args = ('image', 'mask')
  input_help = {
    'image': 'Image to inpaint (with --mask).',
    'mask': 'Inpainting mask, white = region to fill (with --image).',
  }
  needs_images = True

  def encode(self, ldm, params, first_stage_params, cond):
    # scripts/inpaint.py: the first stage's encoding of the masked image (VQ: pre-quantisation;
    # KL: the posterior mode), then the mask resized (nearest) to the latent size.
    z = ldm.encode(first_stage_params, cond['masked_image'])
    mask = resize_nearest_torch(cond['mask'].astype(z.dtype), z.shape[1:3])
    return jnp.concatenate([z, mask], axis=-1)

  def user_condition(self, num, image=None, mask=None):
    """The mask (white = fill) is binarised at 0.5, masked_image = (1 - mask) * image; the
    postprocess composites the samples with the image."""
    img = read_image(image)
    m = read_image(mask, 'L').astype(np.float32) / 255.0
    if m.shape[:2] != img.shape[:2]:
      raise TaskInputError(
        f'the mask is {m.shape[1]}x{m.shape[0]} but the image is '
        f'{img.shape[1]}x{img.shape[0]}; they must be the same size'
      )
    m = (m >= 0.5).astype(np.float32)
    cond = {k: repeat(v, num) for k, v in masked_input(img, m).items()}
    original = to_model_range(img)
    return cond, img.shape[:2], lambda x: composite(x, original, m)

  def training_condition(self, examples, positions):
    size = examples[0]['image'].shape[0]
    masks = np.stack([random_mask(size, self.rng(p), self.config.data.mask) for p in positions])[
      ..., None
    ]
    return masked_input(np.stack([e['image'] for e in examples]), masks)

  def postprocess_samples(self, images, examples):
    mask = (np.asarray(examples['cond']['mask']) > 0).astype(np.float32)
    return composite(images, examples['image'], mask)

  def tiles(self, cond, height, width):
    masked, mask = np.asarray(cond['masked_image']), np.asarray(cond['mask']) > 0
    return to_uint8(np.where(mask, 0.0, masked))  # the hole in mid grey
