"""Conditioning encoders (reference: ldm/modules/encoders/modules.py)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.images import resize_bilinear_torch
from ldm_jax.nn.layers import Conv, attention, dense, layer_norm, torch_uniform_init


class ClassEmbedder(nn.Module):
  """Class label -> one context token [B, 1, embed_dim] for cross-attention. With classifier-free
  guidance the last index (``n_classes - 1``, e.g. 1000 of cin256-v2's 1001) is the null class."""

  embed_dim: int
  n_classes: int = 1000

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    emb = nn.Embed(
      self.n_classes, self.embed_dim, embedding_init=nn.initializers.normal(1.0), name='embedding'
    )(labels)
    return emb[:, None, :]


class _DeclaredLinear(nn.Module):
  """The parameters of a torch.nn.Linear, declared and never applied: the reference's unused
  ``to_logits`` head, kept so that parameter counts and checkpoints match."""

  features: int
  in_features: int

  @nn.compact
  def __call__(self):
    init = torch_uniform_init(self.in_features)
    self.param('kernel', init, (self.in_features, self.features))
    self.param('bias', init, (self.features,))


class _Attention(nn.Module):
  """x-transformers' Attention as the reference pins it: 8 heads of 64 whatever the width, no
  mask, q/k/v without bias, output projection with bias."""

  dim: int
  heads: int = 8
  dim_head: int = 64

  @nn.compact
  def __call__(self, x):
    inner = self.heads * self.dim_head
    b, t, _ = x.shape
    split = lambda y: y.reshape(b, t, self.heads, self.dim_head)
    q, k, v = (
      split(dense(inner, self.dim, use_bias=False, dtype=x.dtype, name=n)(x))
      for n in ('to_q', 'to_k', 'to_v')
    )
    out = attention(q, k, v, self.dim_head**-0.5).reshape(b, t, inner)
    return dense(self.dim, inner, dtype=x.dtype, name='to_out')(out)


class _FeedForward(nn.Module):
  dim: int
  mult: int = 4

  @nn.compact
  def __call__(self, x):
    inner = self.dim * self.mult
    # torch's nn.GELU() is the exact (erf) GELU.
    h = jax.nn.gelu(dense(inner, self.dim, dtype=x.dtype, name='net_0_0')(x), approximate=False)
    return dense(self.dim, inner, dtype=x.dtype, name='net_2')(h)


class _PositionalEmbedding(nn.Module):
  max_seq_len: int
  dim: int

  @nn.compact
  def __call__(self, t: int):
    emb = nn.Embed(
      self.max_seq_len, self.dim, embedding_init=nn.initializers.normal(0.02), name='emb'
    )
    return emb(jnp.arange(t))


class TransformerEmbedder(nn.Module):
  """The reference's BERTEmbedder transformer (``TransformerWrapper(attn_layers=Encoder(...))`` of
  its pinned x_transformer.py): token embedding + absolute positions, ``n_layer`` pre-LayerNorm
  blocks (attention, then GELU MLP, each residual), final LayerNorm; returns the normalised hidden
  states [B, T, n_embed]. Used for text (tokens from BERT's uncased WordPiece vocabulary, see
  ``ldm_jax.tasks.tokenizer``) and for layout2img's pre-tokenised boxes. No padding mask: the reference
  attends over padding too. Parameter paths follow the reference's ``cond_stage_model.transformer.*``.
  """

  n_embed: int
  n_layer: int
  vocab_size: int = 30522
  max_seq_len: int = 77
  dtype: Any = jnp.float32
  # std of the token embedding at initialisation: the reference's 0.02 (x-transformers' init_)
  token_init_std: float = 0.02

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    if tokens.shape[1] > self.max_seq_len:
      raise ValueError(
        f'{tokens.shape[1]} tokens, but the embedder has max_seq_len '
        f'{self.max_seq_len}: truncate to {self.max_seq_len}'
      )
    x = nn.Embed(
      self.vocab_size,
      self.n_embed,
      embedding_init=nn.initializers.normal(self.token_init_std),
      name='token_emb',
    )(tokens)
    x = x + _PositionalEmbedding(self.max_seq_len, self.n_embed, name='pos_emb')(tokens.shape[1])
    x = x.astype(self.dtype)
    x = _AttentionLayers(self.n_embed, self.n_layer, name='attn_layers')(x)
    x = layer_norm(x, 'norm')
    _DeclaredLinear(self.vocab_size, self.n_embed, name='to_logits')()
    return x


class _AttentionLayers(nn.Module):
  """``attn_layers.layers.{2i}`` attention, ``{2i+1}`` feed-forward; ``.0`` the pre-LayerNorm, ``.1``
  the block."""

  dim: int
  depth: int

  @nn.compact
  def __call__(self, x):
    for i in range(2 * self.depth):
      h = layer_norm(x, f'layers_{i}_0')
      block = _Attention if i % 2 == 0 else _FeedForward
      x = x + block(self.dim, name=f'layers_{i}_1')(h)
    return x


class BERTEmbedder(nn.Module):
  """``cond_stage_model`` of the text and layout LDMs: token ids [B, T] -> context [B, T, n_embed]."""

  n_embed: int
  n_layer: int
  vocab_size: int = 30522
  max_seq_len: int = 77
  dtype: Any = jnp.float32
  token_init_std: float = 0.02

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    return TransformerEmbedder(
      self.n_embed,
      self.n_layer,
      self.vocab_size,
      self.max_seq_len,
      self.dtype,
      self.token_init_std,
      name='transformer',
    )(tokens)


class SpatialRescaler(nn.Module):
  """``n_stages`` x bilinear resize by ``multiplier`` (torch ``F.interpolate(..., mode='bilinear')``,
  align_corners False, no antialias), then an optional bias-free 1x1 conv ``channel_mapper``
  (semantic synthesis: 182 one-hot classes -> 3 channels). NHWC in and out."""

  n_stages: int = 1
  multiplier: float = 0.5
  in_channels: int = 3
  out_channels: int | None = None
  bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for _ in range(self.n_stages):
      x = resize_bilinear_torch(x, self.multiplier)
    if self.out_channels is not None and self.out_channels != self.in_channels:
      init = torch_uniform_init(self.in_channels)  # torch.nn.Conv2d(in, out, 1, bias=bias)
      mapper = Conv(
        self.out_channels,
        1,
        padding=((0, 0), (0, 0)),
        use_bias=self.bias,
        kernel_init=init,
        bias_init=init,
        name='channel_mapper',
      )
      x = mapper(x)
    return x
