"""SpatialTransformer and its parts (reference: ldm/modules/attention.py)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.nn.layers import attention, conv, dense, group_norm, layer_norm


class CrossAttention(nn.Module):
  """Multi-head attention of x over context (self-attention when context is None); no q/k/v bias."""

  heads: int
  dim_head: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, train: bool = False, context_mask=None):
    """``context_mask`` [B, T] (bool): the context tokens to attend to (None: all)."""
    context = x if context is None else context.astype(self.dtype)
    b, t, dim = x.shape
    inner = self.heads * self.dim_head
    q = dense(inner, dim, use_bias=False, dtype=self.dtype, name='to_q')(x)
    k = dense(inner, context.shape[-1], use_bias=False, dtype=self.dtype, name='to_k')(context)
    v = dense(inner, context.shape[-1], use_bias=False, dtype=self.dtype, name='to_v')(context)
    split = lambda a: a.reshape(a.shape[0], a.shape[1], self.heads, self.dim_head)  # '(h d)' order
    out = attention(split(q), split(k), split(v), self.dim_head**-0.5, key_mask=context_mask)
    out = out.reshape(b, t, inner)
    out = dense(dim, inner, dtype=self.dtype, name='to_out_0')(out)
    return nn.Dropout(self.dropout)(out, deterministic=not train)


class GEGLU(nn.Module):
  """proj -> (value, gate) halves -> value * gelu(gate), exact (erf) GELU as torch's default."""

  inner_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = dense(2 * self.inner_dim, x.shape[-1], dtype=self.dtype, name='proj')(x)
    value, gate = jnp.split(h, 2, axis=-1)
    return value * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  mult: int = 4
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    dim = x.shape[-1]
    h = GEGLU(dim * self.mult, self.dtype, name='net_0')(x)
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    return dense(dim, dim * self.mult, dtype=self.dtype, name='net_2')(h)


class BasicTransformerBlock(nn.Module):
  heads: int
  dim_head: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, train: bool = False, context_mask=None):
    attn = lambda name: CrossAttention(
      self.heads, self.dim_head, self.dropout, self.dtype, name=name
    )
    x = attn('attn1')(layer_norm(x, 'norm1'), None, train) + x
    x = attn('attn2')(layer_norm(x, 'norm2'), context, train, context_mask) + x
    return FeedForward(4, self.dropout, self.dtype, name='ff')(layer_norm(x, 'norm3'), train) + x


class SpatialTransformer(nn.Module):
  """norm -> proj_in (1x1) -> depth x BasicTransformerBlock over H*W tokens -> proj_out (zero) -> +x.
  ``use_linear``: proj_in/proj_out are Linear layers on the tokens (Stable Diffusion 2's
  ``use_linear_in_transformer``; the same map, stored as [out, in] instead of [out, in, 1, 1])."""

  heads: int
  dim_head: int
  depth: int = 1
  dropout: float = 0.0
  context_dim: int | None = None
  dtype: Any = jnp.float32
  use_linear: bool = False

  @nn.compact
  def __call__(self, x, context=None, train: bool = False, context_mask=None):
    if self.context_dim and context is None:
      raise ValueError(
        f'this SpatialTransformer cross-attends to a context of width '
        f'{self.context_dim}, but no context was given'
      )
    if context is not None and self.context_dim and context.shape[-1] != self.context_dim:
      raise ValueError(f'context width {context.shape[-1]} != context_dim {self.context_dim}')
    b, hgt, wid, c = x.shape
    inner = self.heads * self.dim_head
    h = group_norm(x, 'norm', 1e-6)
    if self.use_linear:
      h = dense(inner, c, dtype=self.dtype, name='proj_in')(h.reshape(b, hgt * wid, c))
    else:
      h = conv(inner, c, 1, dtype=self.dtype, name='proj_in')(h).reshape(b, hgt * wid, inner)
    for d in range(self.depth):
      h = BasicTransformerBlock(
        self.heads, self.dim_head, self.dropout, self.dtype, name=f'transformer_blocks_{d}'
      )(h, context, train, context_mask)
    if self.use_linear:
      h = dense(c, inner, zero_init=True, dtype=self.dtype, name='proj_out')(h)
      return x + h.reshape(b, hgt, wid, c)
    h = conv(c, inner, 1, zero_init=True, dtype=self.dtype, name='proj_out')(
      h.reshape(b, hgt, wid, inner)
    )
    return x + h
