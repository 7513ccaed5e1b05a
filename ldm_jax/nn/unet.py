"""The denoiser: CompVis ``UNetModel`` (ldm/modules/diffusionmodules/openaimodel.py), NHWC.

Children are named after the reference's state-dict keys (``input_blocks.4.1`` -> ``input_blocks_4_1``)
so that released weights map one to one (``ldm_jax.convert.torch_names``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.config.models import UNetConfig
from ldm_jax.nn.attention import SpatialTransformer
from ldm_jax.nn.layers import attention, avg_pool2, conv, dense, group_norm, upsample_nearest

GN_EPS = 1e-5  # GroupNorm32 uses torch's default eps and runs in float32


def gn32(x, name):
  return group_norm(x, name, GN_EPS, float32=True)


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [cos(t f_k), sin(t f_k)], f_k = max_period^(-k/half) (cos first)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class ResBlock(nn.Module):
  out_channels: int
  dropout: float = 0.0
  use_scale_shift_norm: bool = False
  up: bool = False
  down: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool = False):
    c_in, out = x.shape[-1], self.out_channels
    h = nn.silu(gn32(x, 'in_layers_0'))
    if self.up:
      h, x = upsample_nearest(h), upsample_nearest(x)
    elif self.down:
      h, x = avg_pool2(h), avg_pool2(x)
    h = conv(out, c_in, 3, dtype=self.dtype, name='in_layers_2')(h)
    emb_out = dense(
      2 * out if self.use_scale_shift_norm else out,
      emb.shape[-1],
      dtype=self.dtype,
      name='emb_layers_1',
    )(nn.silu(emb))[:, None, None, :]
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = gn32(h, 'out_layers_0') * (1 + scale) + shift
    else:
      h = gn32(h + emb_out, 'out_layers_0')
    h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=not train)
    h = conv(out, out, 3, zero_init=True, dtype=self.dtype, name='out_layers_3')(h)
    if c_in != out:
      x = conv(out, c_in, 1, dtype=self.dtype, name='skip_connection')(x)
    return x + h


class AttentionBlock(nn.Module):
  """Spatial self-attention with the legacy QKV layout: qkv channel = head*3d + {q,k,v}*d + i,
  q and k each scaled by d^-1/4 (equivalently logits by d^-1/2)."""

  heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    d = c // self.heads
    h = gn32(x, 'norm').reshape(b, hgt * wid, c)
    qkv = dense(3 * c, c, dtype=self.dtype, name='qkv')(h).reshape(b, hgt * wid, self.heads, 3, d)
    a = attention(qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :], d**-0.5).reshape(b, hgt * wid, c)
    h = dense(c, c, zero_init=True, dtype=self.dtype, name='proj_out')(a)
    return x + h.reshape(b, hgt, wid, c)


class Downsample(nn.Module):
  use_conv: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if not self.use_conv:
      return avg_pool2(x)
    c = x.shape[-1]  # stride-2 3x3 conv with symmetric padding 1 (unlike the first stage)
    return conv(c, c, 3, stride=2, dtype=self.dtype, name='op')(x)


class Upsample(nn.Module):
  use_conv: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = upsample_nearest(x)
    if self.use_conv:
      x = conv(x.shape[-1], x.shape[-1], 3, dtype=self.dtype, name='conv')(x)
    return x


class UNetModel(nn.Module):
  """The UNet of ``config`` (``config.UNetConfig``: the reference constructor's fields and
  defaults). ``dtype`` (computation; parameters stay fp32) and ``remat`` are training choices
  that leave the parameters as they are."""

  config: UNetConfig
  dtype: Any = jnp.float32
  # Rematerialisation of each ResBlock and attention block in the backward pass (memory for
  # compute): '' none, 'full' (keep only block inputs), 'dots' (keep matmul/conv results that have
  # no batch dimension... i.e. jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims).
  # Parameter names and values are unchanged.
  remat: str = ''

  def _wrap(self, cls, static_argnums=()):
    if not self.remat:
      return cls
    policies = {'full': None, 'dots': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims}
    if self.remat not in policies:
      raise ValueError(f"UNet remat must be '', 'full' or 'dots', got {self.remat!r}")
    return nn.remat(cls, policy=policies[self.remat], static_argnums=static_argnums)

  def _attention_block(self, ch: int, name: str, level: int | None = None) -> nn.Module:
    """Heads per attention site, resolved exactly as the reference does (incl. ``legacy``)."""
    if self.config.num_head_channels == -1:
      if self.config.num_heads <= 0:
        raise ValueError('UNet attention needs num_heads > 0 or num_head_channels > 0')
      heads, dim_head = self.config.num_heads, ch // self.config.num_heads
    else:
      heads, dim_head = ch // self.config.num_head_channels, self.config.num_head_channels
    if self.config.legacy:
      dim_head = (
        ch // heads if self.config.use_spatial_transformer else self.config.num_head_channels
      )
    if self.config.use_spatial_transformer:
      # __call__(self, x, context, train): train (index 3, self is 0) is a Python bool
      return self._wrap(SpatialTransformer, (3,))(
        heads,
        dim_head,
        self.config.depth(level),
        self.config.dropout,
        self.config.context_dim or None,
        self.dtype,
        self.config.use_linear_in_transformer,
        name=name,
      )
    return self._wrap(AttentionBlock)(
      heads if dim_head == -1 else ch // dim_head, self.dtype, name=name
    )

  def _res(self, out, name, up=False, down=False):
    return self._wrap(ResBlock, (3,))(
      out, self.config.dropout, self.config.use_scale_shift_norm, up, down, self.dtype, name=name
    )

  def _apply_attention(self, block, h, context, train, context_mask=None):
    if self.config.use_spatial_transformer:
      return block(h, context, train, context_mask)
    return block(h)

  def _down(self, h, emb, context, train, context_mask):
    """The input blocks: (h, the skip connections, input_blocks_0 first)."""
    cfg, mc = self.config, self.config.model_channels
    skips, idx, ds = [h], 1, 1
    last = len(cfg.channel_mult) - 1
    for level, mult in enumerate(cfg.channel_mult):
      for _ in range(cfg.num_res_blocks):
        h = self._res(mult * mc, f'input_blocks_{idx}_0')(h, emb, train)
        if ds in cfg.attention_resolutions:
          block = self._attention_block(mult * mc, f'input_blocks_{idx}_1', level)
          h = self._apply_attention(block, h, context, train, context_mask)
        skips.append(h)
        idx += 1
      if level != last:
        if cfg.resblock_updown:
          h = self._res(h.shape[-1], f'input_blocks_{idx}_0', down=True)(h, emb, train)
        else:
          h = Downsample(cfg.conv_resample, self.dtype, name=f'input_blocks_{idx}_0')(h)
        skips.append(h)
        idx += 1
        ds *= 2
    return h, skips

  def _up(self, h, skips, emb, context, train, context_mask):
    """The output blocks, each on the concatenation with its skip connection."""
    cfg, mc = self.config, self.config.model_channels
    idx, ds = 0, 2 ** (len(cfg.channel_mult) - 1)
    for level, mult in reversed(list(enumerate(cfg.channel_mult))):
      for i in range(cfg.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = self._res(mult * mc, f'output_blocks_{idx}_0')(h, emb, train)
        sub = 1
        if ds in cfg.attention_resolutions:
          block = self._attention_block(mult * mc, f'output_blocks_{idx}_1', level)
          h = self._apply_attention(block, h, context, train, context_mask)
          sub = 2
        if level and i == cfg.num_res_blocks:
          name = f'output_blocks_{idx}_{sub}'
          if cfg.resblock_updown:
            h = self._res(h.shape[-1], name, up=True)(h, emb, train)
          else:
            h = Upsample(cfg.conv_resample, self.dtype, name=name)(h)
          ds //= 2
        idx += 1
    return h

  @nn.compact
  def __call__(self, x, timesteps, context=None, y=None, train: bool = False, context_mask=None):
    """x: [B, H, W, in_channels]; timesteps: [B] integers; context: [B, T, context_dim]
    (``context_mask`` [B, T] bool: the tokens cross-attention reads; None: all);
    y: [B] class labels (only with ``num_classes``) or [B, adm_in_channels] vectors (only with
    ``adm_in_channels``). Returns [B, H, W, out_channels]."""
    if (y is not None) != bool(self.config.num_classes or self.config.adm_in_channels):
      raise ValueError('pass y exactly when the UNet has num_classes or adm_in_channels')
    mc = self.config.model_channels
    emb = dense(4 * mc, mc, dtype=self.dtype, name='time_embed_0')(
      timestep_embedding(timesteps, mc).astype(self.dtype)
    )
    emb = dense(4 * mc, 4 * mc, dtype=self.dtype, name='time_embed_2')(nn.silu(emb))
    if self.config.num_classes:
      emb = emb + nn.Embed(
        self.config.num_classes,
        4 * mc,
        embedding_init=nn.initializers.normal(1.0),
        dtype=self.dtype,
        name='label_emb',
      )(y)
    if self.config.adm_in_channels:  # label_emb.0.0 / label_emb.0.2 of the reference
      adm = self.config.adm_in_channels
      v = dense(4 * mc, adm, dtype=self.dtype, name='label_emb_0_0')(y.astype(self.dtype))
      emb = emb + dense(4 * mc, 4 * mc, dtype=self.dtype, name='label_emb_0_2')(nn.silu(v))

    h = conv(mc, x.shape[-1], 3, dtype=self.dtype, name='input_blocks_0_0')(x.astype(self.dtype))
    h, skips = self._down(h, emb, context, train, context_mask)
    ch = h.shape[-1]
    h = self._res(ch, 'middle_block_0')(h, emb, train)
    h = self._apply_attention(
      self._attention_block(ch, 'middle_block_1'), h, context, train, context_mask
    )
    h = self._res(ch, 'middle_block_2')(h, emb, train)
    h = self._up(h, skips, emb, context, train, context_mask)
    h = nn.silu(gn32(h, 'out_0'))
    return conv(self.config.out_channels, mc, 3, zero_init=True, dtype=self.dtype, name='out_2')(h)
