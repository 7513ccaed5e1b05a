"""SDXL's conditioner (generative-models' ``GeneralConditioner`` of sd_xl_base.yaml /
sd_xl_refiner.yaml): the text encoders whose penultimate states, concatenated along the width, are
the cross-attention context, the last encoder's pooled embedding, and the Fourier embeddings of the
size and score conditioning ("micro-conditioning") that join it in the UNet's vector input ``y``.

  base:    embedders.0 CLIP ViT-L/14 (768) + embedders.1 OpenCLIP ViT-bigG/14 (1280): context
           2048; y = pooled bigG (1280) + original size, crop top-left, target size (6 x 256)
  refiner: embedders.0 OpenCLIP ViT-bigG/14: context 1280; y = pooled (1280) + original size,
           crop top-left, aesthetic score (5 x 256)

Parameters are named as the checkpoint's ``conditioner.embedders.<i>.*`` (``transformer.*`` for
CLIP, ``model.*`` for OpenCLIP, in transformers' names; ``ldm_jax.convert`` renames OpenCLIP's).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.config.models import TextEncoderConfig
from ldm_jax.nn.clip import CLIPTextModel
from ldm_jax.nn.unet import timestep_embedding


def micro_embedding(values: jax.Array, dim: int = 256) -> jax.Array:
  """[B, k] numbers -> [B, k * dim]: each number's sinusoidal embedding (cos first), in order
  (generative-models' ConcatTimestepEmbedderND; diffusers' add_time_ids through Timesteps)."""
  b, k = values.shape
  return timestep_embedding(values.reshape(-1), dim).reshape(b, k * dim)


class _Embedder(nn.Module):
  text: TextEncoderConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    """(context [B, T, width], pooled [B, projection_dim] or None)."""
    child = 'transformer' if self.text.kind == 'clip' else 'model'
    model = CLIPTextModel(**self.text.clip_fields(), dtype=self.dtype, name=child)
    if self.text.projection_dim:
      return model.context_and_pooled(tokens)
    return model(tokens), None


class SDXLTextEncoders(nn.Module):
  """Token ids [B, E, T] (one row per encoder, each from its own tokenizer) -> (context
  [B, T, sum of widths], the last encoder's pooled embedding [B, projection_dim])."""

  encoders: tuple[TextEncoderConfig, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array):
    if tokens.ndim != 3 or tokens.shape[1] != len(self.encoders):
      raise ValueError(
        f'SDXL text encoders take tokens [B, {len(self.encoders)}, T], got {tokens.shape}'
      )
    contexts, pooled = [], None
    for i, text in enumerate(self.encoders):
      ctx, pooled = _Embedder(text, self.dtype, name=f'embedders_{i}')(tokens[:, i])
      contexts.append(ctx)
    return jnp.concatenate(contexts, axis=-1), pooled
