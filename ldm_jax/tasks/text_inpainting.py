"""Text-guided inpainting (Stable Diffusion's inpainting models, v1-inpainting-inference.yaml:
LatentInpaintDiffusion with conditioning_key 'hybrid'): the UNet sees [x, mask, masked-image latent]
(9 channels) and cross-attends to the prompt. As the reference: the mask (1 = to fill) resized to
the latent by nearest neighbour, masked_image = image * (mask < 0.5) with the image in [-1, 1] (the
hole is mid grey), its first-stage latent times the scale factor (the posterior mode here; the
reference draws a sample). Guidance drops the prompt only; the mask and masked image stay.

Raw condition: {'tokens': [B, 77] int32, 'masked_image': [B, H, W, 3] in [-1, 1],
'mask': [B, H, W, 1] in {0, 1}}. Training: a caption of the image and LaMa-style random masks.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ldm_jax.images import resize_nearest_torch, to_model_range, to_uint8
from ldm_jax.tasks.base import TaskInputError, read_image, repeat
from ldm_jax.tasks.inpainting import Inpainting
from ldm_jax.tasks.masks import random_mask
from ldm_jax.tasks.text import TextToImage


def sd_masked_input(image_uint8: np.ndarray, mask01: np.ndarray) -> dict:
  """masked_image = image * (mask < 0.5) in [-1, 1], and the mask in {0, 1} (any batch axes)."""
  image = to_model_range(image_uint8)
  return {'masked_image': image * (mask01 < 0.5), 'mask': mask01.astype(np.float32)}


class TextInpainting(TextToImage):
  name = 'text_inpainting'
  fills_a_mask = True
  clip_scored = False
  annotations = ('caption',)
  conditioning_key = 'hybrid'
  input_args = ('prompt', 'image', 'mask')
  input_help = {**TextToImage.input_help, **Inpainting.input_help}
  needs_images = True
  guidable = True  # the prompt is cross-attended: guidance drops it, the concat part stays

  def validate(self):
    super().validate()
    if self.config.diffusion.scale_by_std:
      raise ValueError(
        'the text_inpainting task scales the masked-image latent by config.diffusion.'
        'scale_factor: set config.diffusion.scale_by_std=False (SD: 0.18215)'
      )

  def encode(self, ldm, params, first_stage_params, cond):
    text = ldm.cond_stage.apply({'params': params['cond_stage']}, cond['tokens'])
    z = ldm.encode(first_stage_params, cond['masked_image']) * self.config.diffusion.scale_factor
    mask = resize_nearest_torch(cond['mask'].astype(z.dtype), z.shape[1:3])
    return {'concat': jnp.concatenate([mask, z], axis=-1), 'crossattn': text}

  def user_condition(self, num, prompt=None, image=None, mask=None):
    """The mask (white = fill) is binarised at 0.5; the output size is the image's."""
    tokens = super().user_condition(num, prompt)[0]
    img = read_image(image)
    m = read_image(mask, 'L').astype(np.float32) / 255.0
    if m.shape[:2] != img.shape[:2]:
      raise TaskInputError(
        f'the mask is {m.shape[1]}x{m.shape[0]} but the image is '
        f'{img.shape[1]}x{img.shape[0]}; they must be the same size'
      )
    m = (m >= 0.5).astype(np.float32)  # [H, W, 1]
    cond = {k: repeat(v, num) for k, v in sd_masked_input(img, m).items()}
    return {'tokens': tokens, **cond}, img.shape[:2], None

  def training_condition(self, examples, positions):
    tokens = super().training_condition(examples, positions)
    size = examples[0]['image'].shape[0]
    masks = np.stack([random_mask(size, self.rng(p), self.config.data.mask) for p in positions])
    images = np.stack([e['image'] for e in examples])
    return {'tokens': tokens, **sd_masked_input(images, masks[..., None])}

  def null_condition(self, cond):
    return {**cond, 'tokens': self.tokenize([''] * len(cond['tokens']))}

  def null_example(self):
    return {'tokens': self.tokenize([''])[0]}

  def negative_condition(self, num, negative_prompt, cond=None):
    raise TaskInputError('negative prompts with inpainting are not supported yet: leave it unset')

  def tiles(self, cond, height, width):
    masked, mask = np.asarray(cond['masked_image']), np.asarray(cond['mask']) > 0.5
    return to_uint8(np.where(mask, 0.0, masked))
