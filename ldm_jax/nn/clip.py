"""CLIP's text transformer, the text encoder of Stable Diffusion, and CLIP's image tower (the
CLIP score of text-to-image evaluation).

Stable Diffusion 1.x conditions on OpenAI's CLIP ViT-L/14 text model (``FrozenCLIPEmbedder``: 12
layers of width 768, quick-GELU, the final layer norm of the last layer's output); 2.x on the
OpenCLIP ViT-H/14 text tower (``FrozenOpenCLIPEmbedder``: 24 layers of width 1024, exact GELU, and
``layer='penultimate'``: the output of layer 23, through the final layer norm). Both are the same
pre-LayerNorm causal transformer over 77 token positions; they differ in width, depth, activation,
which layer they return and how their weights are named. Parameters here are named as the
``transformers`` CLIPTextModel's state dict (``text_model.encoder.layers.0.self_attn.q_proj``),
which SD 1.x checkpoints and diffusers folders use; ``ldm_jax.convert`` maps OpenCLIP's names
(``transformer.resblocks.0.attn.in_proj_weight``) onto them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.nn.layers import Conv, attention, dense, layer_norm

ACTIVATIONS = {
  # OpenAI CLIP's x * sigmoid(1.702 x)
  'quick_gelu': lambda x: x * jax.nn.sigmoid(1.702 * x),
  'gelu': lambda x: jax.nn.gelu(x, approximate=False),  # torch nn.GELU (erf)
}
# 'penultimate_hidden': the penultimate layer's output without the final layer norm (SDXL's
# encoders: generative-models' layer='hidden' / legacy=False, diffusers' hidden_states[-2])
LAYERS = ('last', 'penultimate', 'penultimate_hidden')


class _Attention(nn.Module):
  width: int
  heads: int
  dtype: Any = jnp.float32
  causal: bool = True

  @nn.compact
  def __call__(self, x):
    b, t, w = x.shape
    d = w // self.heads
    q, k, v = (
      dense(w, w, dtype=self.dtype, name=n)(x).reshape(b, t, self.heads, d)
      for n in ('q_proj', 'k_proj', 'v_proj')
    )
    out = attention(q, k, v, d**-0.5, is_causal=self.causal).reshape(b, t, w)
    return dense(w, w, dtype=self.dtype, name='out_proj')(out)


class _MLP(nn.Module):
  width: int
  act: str
  dtype: Any = jnp.float32
  hidden: int = 0  # 0: 4 x width

  @nn.compact
  def __call__(self, x):
    hidden = self.hidden or 4 * self.width
    h = dense(hidden, self.width, dtype=self.dtype, name='fc1')(x)
    return dense(self.width, hidden, dtype=self.dtype, name='fc2')(ACTIVATIONS[self.act](h))


class _Layer(nn.Module):
  width: int
  heads: int
  act: str
  dtype: Any = jnp.float32
  causal: bool = True
  hidden: int = 0

  @nn.compact
  def __call__(self, x):
    x = x + _Attention(self.width, self.heads, self.dtype, self.causal, name='self_attn')(
      layer_norm(x, 'layer_norm1')
    )
    mlp = _MLP(self.width, self.act, self.dtype, self.hidden, name='mlp')
    return x + mlp(layer_norm(x, 'layer_norm2'))


class _Embeddings(nn.Module):
  width: int
  vocab_size: int
  max_len: int

  @nn.compact
  def __call__(self, tokens):
    tok = nn.Embed(
      self.vocab_size,
      self.width,
      embedding_init=nn.initializers.normal(0.02),
      name='token_embedding',
    )(tokens)
    pos = nn.Embed(
      self.max_len,
      self.width,
      embedding_init=nn.initializers.normal(0.01),
      name='position_embedding',
    )(jnp.arange(tokens.shape[1]))
    return tok + pos


class _Encoder(nn.Module):
  """The layers; returns the hidden states after each (index i: after layer i)."""

  width: int
  layers: int
  heads: int
  act: str
  dtype: Any = jnp.float32
  causal: bool = True
  hidden: int = 0

  @nn.compact
  def __call__(self, x):
    outs = []
    for i in range(self.layers):
      layer = _Layer(
        self.width, self.heads, self.act, self.dtype, self.causal, self.hidden, name=f'layers_{i}'
      )
      x = layer(x)
      outs.append(x)
    return outs


class CLIPTextTransformer(nn.Module):
  """``text_model``: token ids [B, T] (T <= max_len) -> hidden states [B, T, width] of the chosen
  layer through the final layer norm. ``layer='penultimate'`` returns the second-to-last layer's
  output (SD 2.x); the last layer's parameters are kept (checkpoints hold them) and its compute is
  dropped by XLA as dead code."""

  width: int = 768
  layers: int = 12
  heads: int = 12
  act: str = 'quick_gelu'
  layer: str = 'last'
  vocab_size: int = 49408
  max_len: int = 77
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, layer: str | None = None, with_last: bool = False):
    """``with_last``: (the chosen layer's states, the last layer's final-normed states), one
    pass for both (SDXL's context and pooled embedding)."""
    layer = layer or self.layer
    if self.act not in ACTIVATIONS:
      raise ValueError(f'CLIP act must be one of {sorted(ACTIVATIONS)}, got {self.act!r}')
    if layer not in LAYERS:
      raise ValueError(f'CLIP layer must be one of {LAYERS}, got {layer!r}')
    if tokens.shape[1] > self.max_len:
      raise ValueError(
        f'{tokens.shape[1]} tokens, but CLIP has {self.max_len} positions: truncate them'
      )
    x = _Embeddings(self.width, self.vocab_size, self.max_len, name='embeddings')(tokens)
    outs = _Encoder(self.width, self.layers, self.heads, self.act, self.dtype, name='encoder')(
      x.astype(self.dtype)
    )
    h = outs[-1] if layer == 'last' else outs[-2]
    final_norm = nn.LayerNorm(epsilon=1e-5, dtype=h.dtype, name='final_layer_norm')
    normed = final_norm(h)  # declared for every layer (checkpoints hold it); unused: dead code
    out = h if layer == 'penultimate_hidden' else normed
    return (out, final_norm(outs[-1])) if with_last else out


class CLIPTextModel(nn.Module):
  """``transformers.CLIPTextModel`` (``text_model.*``), plus OpenCLIP's ``text_projection`` [width,
  projection_dim] and ``logit_scale`` when ``projection_dim`` > 0 (SD 2's checkpoints hold them;
  ``pooled`` uses the projection: the end-of-text token's final-normed state, as CLIP's
  ``encode_text``)."""

  width: int = 768
  layers: int = 12
  heads: int = 12
  act: str = 'quick_gelu'
  layer: str = 'last'
  projection_dim: int = 0
  vocab_size: int = 49408
  max_len: int = 77
  dtype: Any = jnp.float32

  def setup(self):
    self.text_model = CLIPTextTransformer(
      self.width,
      self.layers,
      self.heads,
      self.act,
      self.layer,
      self.vocab_size,
      self.max_len,
      self.dtype,
    )
    if self.projection_dim:
      self.text_projection = self.param(
        'text_projection',
        nn.initializers.normal(self.width**-0.5),
        (self.width, self.projection_dim),
      )
      self.logit_scale = self.param('logit_scale', nn.initializers.constant(4.6052), ())

  def __call__(self, tokens: jax.Array) -> jax.Array:
    return self.text_model(tokens)

  def pooled(self, tokens: jax.Array, eot_token: int = 49407) -> jax.Array:
    """[B, projection_dim]: the final-normed last layer's state at each row's first end-of-text
    token, times ``text_projection`` (CLIP's text embedding)."""
    return self.context_and_pooled(tokens, eot_token)[1]

  def context_and_pooled(self, tokens: jax.Array, eot_token: int = 49407):
    """(the states of ``layer``, the pooled embedding of ``pooled``) from one pass."""
    if not self.projection_dim:
      raise ValueError('this CLIP text model has no projection (projection_dim=0)')
    ctx, h = self.text_model(tokens, with_last=True)
    eot = jnp.argmax(tokens == eot_token, axis=1)
    return ctx, h[jnp.arange(h.shape[0]), eot] @ self.text_projection.astype(h.dtype)


class CLIPVisionModel(nn.Module):
  """CLIP's image tower with its projection, named as ``transformers.CLIPModel``'s
  ``vision_model.*`` and ``visual_projection``: images [B, S, S, 3], already CLIP-normalised
  (``clip_pixels``) -> image embeddings [B, projection_dim] (``get_image_features``). A ViT:
  patches of ``patch`` pixels plus a class token, pre-LayerNorm (``pre_layrnorm``, transformers'
  spelling), bidirectional layers, the class token's state through ``post_layernorm``."""

  width: int = 1024
  layers: int = 24
  heads: int = 16
  act: str = 'quick_gelu'
  image_size: int = 224
  patch: int = 14
  projection_dim: int = 768
  hidden: int = 0  # the MLP width (0: 4 x width, as every released CLIP)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    pooled = _VisionTransformer(
      self.width, self.layers, self.heads, self.act, self.image_size, self.patch, self.hidden,
      self.dtype, name='vision_model',
    )(pixels)  # fmt: skip
    return dense(self.projection_dim, self.width, use_bias=False, name='visual_projection')(pooled)


class _VisionTransformer(nn.Module):
  width: int
  layers: int
  heads: int
  act: str
  image_size: int
  patch: int
  hidden: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels):
    if pixels.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'CLIP images must be {self.image_size}px, got {pixels.shape[1:3]}')
    x = _VisionEmbeddings(self.width, self.image_size, self.patch, name='embeddings')(pixels)
    x = layer_norm(x, 'pre_layrnorm')
    outs = _Encoder(
      self.width, self.layers, self.heads, self.act, self.dtype, False, self.hidden, name='encoder'
    )(x.astype(self.dtype))
    return layer_norm(outs[-1][:, 0], 'post_layernorm')


class _VisionEmbeddings(nn.Module):
  width: int
  image_size: int
  patch: int

  @nn.compact
  def __call__(self, pixels):
    p = self.patch
    x = Conv(self.width, p, p, padding=((0, 0), (0, 0)), use_bias=False, name='patch_embedding')(
      pixels
    )
    b = x.shape[0]
    x = x.reshape(b, -1, self.width)
    cls = self.param('class_embedding', nn.initializers.normal(self.width**-0.5), (self.width,))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)).astype(x.dtype), x], axis=1)
    n = (self.image_size // p) ** 2 + 1
    pos = nn.Embed(n, self.width, embedding_init=nn.initializers.normal(0.02),
                   name='position_embedding')(jnp.arange(n))  # fmt: skip
    return x + pos


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(images_uint8: jax.Array, size: int) -> jax.Array:
  """uint8 images [B, H, W, 3] -> CLIP's input: the shorter side resized to ``size`` (bicubic,
  antialiased: jax.image.resize, not PIL's filter), centre-cropped to size x size, scaled to [0, 1]
  and normalised with CLIP's mean and std."""
  x = jnp.asarray(images_uint8, jnp.float32) / 255.0
  b, h, w, c = x.shape
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  if (nh, nw) != (h, w):
    x = jnp.clip(jax.image.resize(x, (b, nh, nw, c), 'bicubic', antialias=True), 0.0, 1.0)
  top, left = (nh - size) // 2, (nw - size) // 2
  x = x[:, top : top + size, left : left + size]
  return (x - jnp.asarray(CLIP_MEAN)) / jnp.asarray(CLIP_STD)


class FrozenCLIPEmbedder(nn.Module):
  """SD 1.x ``cond_stage_model``: CLIP ViT-L/14's text model under ``transformer``; token ids [B, 77]
  (padded with end-of-text) -> context [B, 77, 768]."""

  width: int = 768
  layers: int = 12
  heads: int = 12
  act: str = 'quick_gelu'
  layer: str = 'last'
  projection_dim: int = 0
  vocab_size: int = 49408
  max_len: int = 77
  dtype: Any = jnp.float32
  child = 'transformer'  # where the reference's state dict holds the text model

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    return CLIPTextModel(
      self.width,
      self.layers,
      self.heads,
      self.act,
      self.layer,
      self.projection_dim,
      self.vocab_size,
      self.max_len,
      self.dtype,
      name=self.child,
    )(tokens)


class FrozenOpenCLIPEmbedder(FrozenCLIPEmbedder):
  """SD 2.x ``cond_stage_model``: the OpenCLIP ViT-H/14 text tower under ``model`` (24 layers of
  1024, GELU, ``layer='penultimate'``, text projection and logit scale kept); token ids [B, 77]
  (padded with 0) -> context [B, 77, 1024]."""

  width: int = 1024
  layers: int = 24
  heads: int = 16
  act: str = 'gelu'
  layer: str = 'penultimate'
  projection_dim: int = 1024
  child = 'model'
