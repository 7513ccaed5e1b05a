"""Semantic synthesis (landscapes from 182-class maps): a class map, one-hot, through the
SpatialRescaler (bilinear downscales + a 1x1 conv), concatenated to the latent. Raw condition:
one-hot float32 [B, H, W, classes] from users, or int32 class maps [B, H, W] in training batches
(one-hot on the device)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import storage
from ldm_jax.images import resize_nearest_torch
from ldm_jax.nn.encoders import SpatialRescaler
from ldm_jax.tasks.base import Task, TaskInputError, repeat


class SemanticSynthesis(Task):
  name = 'semantic'
  annotations = ('segmentation',)
  encoder_kinds = ('rescaler',)
  conditioning_key = 'concat'
  input_args = ('segmentation',)
  input_help = {
    'segmentation': 'Segmentation map: PNG or .npy of class indices (semantic synthesis models).'
  }
  needs_images = True  # the map follows each image's crop and flip

  def build_encoder(self):
    cs = self.cs
    return SpatialRescaler(
      n_stages=cs.n_stages,
      multiplier=cs.multiplier,
      in_channels=cs.in_channels,
      out_channels=cs.out_channels or None,
      bias=cs.bias,
    )

  def encoder_input(self, batch=1):
    s = self.config.data.image_size
    return np.zeros((batch, s, s, self.cs.in_channels), np.float32)

  def encode(self, ldm, params, first_stage_params, cond):
    if jnp.issubdtype(jnp.asarray(cond).dtype, jnp.integer):  # a class map (training batches)
      cond = jax.nn.one_hot(cond, self.cs.in_channels, dtype=jnp.float32)
    return super().encode(ldm, params, first_stage_params, cond)

  def user_condition(self, num, segmentation=None):
    """A label map (PNG of class indices, .npy, or an integer array [H, W]) -> one-hot float32
    [num, H, W, n_classes], as taming's segmentation datasets feed the SpatialRescaler."""
    labels = self._read(segmentation)
    n = self.cs.in_channels
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
      raise TaskInputError(
        f'a segmentation map is an integer array [H, W], got {labels.dtype} {labels.shape}'
      )
    if labels.min() < 0 or labels.max() >= n:
      raise TaskInputError(
        f'segmentation classes must be in 0..{n - 1}, found {labels.min()}..{labels.max()}'
      )
    cond = repeat(np.eye(n, dtype=np.float32)[labels], num)
    return cond, cond.shape[1:3], None

  @staticmethod
  def _read(segmentation) -> np.ndarray:
    if isinstance(segmentation, str) and segmentation.endswith('.npy'):
      return storage.load_npy(segmentation)
    if not isinstance(segmentation, str):
      return np.asarray(segmentation)
    from PIL import Image

    try:
      with storage.open_file(segmentation) as f, Image.open(f) as im:
        if im.mode not in ('L', 'P', 'I', 'I;16'):
          raise TaskInputError(
            f'{segmentation!r} is a {im.mode} image; a segmentation map is a '
            'single-channel PNG whose pixel values are class indices'
          )
        return np.asarray(im)
    except OSError as e:
      raise TaskInputError(f'cannot read segmentation {segmentation!r}: {e}') from None

  def training_condition(self, examples, positions):
    seg = np.stack([e['segmentation'] for e in examples]).astype(np.int32)
    n = self.cs.in_channels
    if seg.min() < 0 or seg.max() >= n:
      raise ValueError(
        f'segmentation classes {seg.min()}..{seg.max()} are outside 0..{n - 1}: '
        f'config.cond_stage.in_channels={n} is the number of classes'
      )
    return seg

  def tiles(self, cond, height, width):
    from ldm_jax.tasks.tiles import segmentation_tiles

    tiles = segmentation_tiles(cond, self.cs.in_channels)
    return np.asarray(resize_nearest_torch(tiles, (height, width)))
