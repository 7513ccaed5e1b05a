"""First stage: Encoder/Decoder, AutoencoderKL and VQModel (reference: ldm/modules/diffusionmodules/
model.py and ldm/models/autoencoder.py).

Module names mirror the reference's state-dict keys with numeric indices folded into the name
(``encoder.down.0.block.1.norm1`` -> ``encoder/down_0/block_1/norm1``), see ``ldm_jax.convert.torch_names``.
Tensors are NHWC; images in [-1, 1].
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.nn.distributions import DiagonalGaussian
from ldm_jax.nn.layers import attention, conv, group_norm, upsample_nearest
from ldm_jax.nn.quantize import VectorQuantizer

EPS = 1e-6  # the first stage's Normalize(): GroupNorm(32, eps=1e-6)


class ResnetBlock(nn.Module):
  out_channels: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c_in = x.shape[-1]
    h = nn.swish(group_norm(x, 'norm1', EPS))
    h = conv(self.out_channels, c_in, 3, dtype=self.dtype, name='conv1')(h)
    h = nn.swish(group_norm(h, 'norm2', EPS))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv(self.out_channels, self.out_channels, 3, dtype=self.dtype, name='conv2')(h)
    if c_in != self.out_channels:
      x = conv(self.out_channels, c_in, 1, dtype=self.dtype, name='nin_shortcut')(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head spatial self-attention with 1x1-conv q/k/v/proj_out (not zero-initialised)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    h = group_norm(x, 'norm', EPS)
    q, k, v = (
      conv(c, c, 1, dtype=self.dtype, name=n)(h).reshape(b, hgt * wid, 1, c)
      for n in ('q', 'k', 'v')
    )
    h = attention(q, k, v, c**-0.5).reshape(b, hgt, wid, c)
    return x + conv(c, c, 1, dtype=self.dtype, name='proj_out')(h)


class Downsample(nn.Module):
  """Pad right/bottom by one, then a stride-2 3x3 conv with no padding (the reference's asymmetric pad)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    return conv(c, c, 3, stride=2, padding=((0, 1), (0, 1)), dtype=self.dtype, name='conv')(x)


class Upsample(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    return conv(c, c, 3, dtype=self.dtype, name='conv')(upsample_nearest(x))


class _Level(nn.Module):
  """One resolution level: ``block_j`` (+ ``attn_j``), then ``downsample``/``upsample`` if asked."""

  out_channels: int
  num_blocks: int
  use_attn: bool
  resample: str  # 'down' | 'up' | 'none'
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool = False):
    for j in range(self.num_blocks):
      h = ResnetBlock(self.out_channels, self.dropout, self.dtype, name=f'block_{j}')(h, train)
      if self.use_attn:
        h = AttnBlock(self.dtype, name=f'attn_{j}')(h)
    if self.resample == 'down':
      h = Downsample(self.dtype, name='downsample')(h)
    elif self.resample == 'up':
      h = Upsample(self.dtype, name='upsample')(h)
    return h


class _Mid(nn.Module):
  channels: int
  use_attn: bool  # False only for attn_type 'none' (nn.Identity in the reference: no parameters)
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, train: bool = False):
    h = ResnetBlock(self.channels, self.dropout, self.dtype, name='block_1')(h, train)
    if self.use_attn:
      h = AttnBlock(self.dtype, name='attn_1')(h)
    return ResnetBlock(self.channels, self.dropout, self.dtype, name='block_2')(h, train)


def _check_attn_type(attn_type: str):
  if attn_type not in ('vanilla', 'none'):
    raise ValueError(f"attn_type must be 'vanilla' or 'none', got {attn_type!r}")


class Encoder(nn.Module):
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  attn_resolutions: Sequence[int]
  resolution: int
  z_channels: int
  double_z: bool = True
  attn_type: str = 'vanilla'
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_attn_type(self.attn_type)
    use_attn = self.attn_type == 'vanilla'
    h = conv(self.ch, x.shape[-1], 3, dtype=self.dtype, name='conv_in')(x.astype(self.dtype))
    res = self.resolution
    last = len(self.ch_mult) - 1
    for i, mult in enumerate(self.ch_mult):
      h = _Level(
        self.ch * mult,
        self.num_res_blocks,
        use_attn and res in self.attn_resolutions,
        'down' if i != last else 'none',
        self.dropout,
        self.dtype,
        name=f'down_{i}',
      )(h, train)
      if i != last:
        res //= 2
    h = _Mid(h.shape[-1], use_attn, self.dropout, self.dtype, name='mid')(h, train)
    h = nn.swish(group_norm(h, 'norm_out', EPS))
    out = 2 * self.z_channels if self.double_z else self.z_channels
    return conv(out, h.shape[-1], 3, dtype=self.dtype, name='conv_out')(h)


class Decoder(nn.Module):
  ch: int
  ch_mult: Sequence[int]
  num_res_blocks: int
  attn_resolutions: Sequence[int]
  resolution: int
  out_ch: int
  attn_type: str = 'vanilla'
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = False):
    _check_attn_type(self.attn_type)
    use_attn = self.attn_type == 'vanilla'
    block_in = self.ch * self.ch_mult[-1]
    res = self.resolution // 2 ** (len(self.ch_mult) - 1)
    h = conv(block_in, z.shape[-1], 3, dtype=self.dtype, name='conv_in')(z.astype(self.dtype))
    h = _Mid(block_in, use_attn, self.dropout, self.dtype, name='mid')(h, train)
    for i in reversed(range(len(self.ch_mult))):
      h = _Level(
        self.ch * self.ch_mult[i],
        self.num_res_blocks + 1,
        use_attn and res in self.attn_resolutions,
        'up' if i != 0 else 'none',
        self.dropout,
        self.dtype,
        name=f'up_{i}',
      )(h, train)
      if i != 0:
        res *= 2
    h = nn.swish(group_norm(h, 'norm_out', EPS))
    # The input of the last layer, for the adversarial loss's adaptive weight (the gradient norms
    # at conv_out.weight); collected only when applied with mutable=['intermediates'].
    self.sow('intermediates', 'pre_conv_out', h)
    return conv(self.out_ch, h.shape[-1], 3, dtype=self.dtype, name='conv_out')(h)


class _FirstStage(nn.Module):
  """Fields shared by both autoencoders (the reference's ``ddconfig`` plus ``embed_dim``)."""

  embed_dim: int
  ch: int = 128
  ch_mult: Sequence[int] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = ()
  resolution: int = 256
  in_channels: int = 3
  out_ch: int = 3
  z_channels: int = 4
  attn_type: str = 'vanilla'
  dropout: float = 0.0
  dtype: Any = jnp.float32

  def _encoder(self, double_z: bool) -> Encoder:
    return Encoder(
      self.ch,
      tuple(self.ch_mult),
      self.num_res_blocks,
      tuple(self.attn_resolutions),
      self.resolution,
      self.z_channels,
      double_z,
      self.attn_type,
      self.dropout,
      self.dtype,
    )

  def _decoder(self) -> Decoder:
    return Decoder(
      self.ch,
      tuple(self.ch_mult),
      self.num_res_blocks,
      tuple(self.attn_resolutions),
      self.resolution,
      self.out_ch,
      self.attn_type,
      self.dropout,
      self.dtype,
    )

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.ch_mult) - 1)


class AutoencoderKL(_FirstStage):
  """KL-regularised autoencoder. ``encode`` -> DiagonalGaussian posterior; ``decode`` -> image."""

  def setup(self):
    self.encoder = self._encoder(double_z=True)
    self.decoder = self._decoder()
    self.quant_conv = conv(2 * self.embed_dim, 2 * self.z_channels, 1, dtype=self.dtype)
    self.post_quant_conv = conv(self.z_channels, self.embed_dim, 1, dtype=self.dtype)

  def encode(self, x, train: bool = False) -> DiagonalGaussian:
    moments = self.quant_conv(self.encoder(x, train)).astype(jnp.float32)
    return DiagonalGaussian.from_moments(moments)

  def decode(self, z, train: bool = False):
    return self.decoder(self.post_quant_conv(z.astype(self.dtype)), train)

  def __call__(self, x, key: jax.Array | None = None, train: bool = False):
    """Reconstruct x from a posterior sample (or the mode when ``key`` is None)."""
    posterior = self.encode(x, train)
    z = posterior.mode() if key is None else posterior.sample(key)
    return self.decode(z, train), posterior


class VQModel(_FirstStage):
  """VQ autoencoder with the LDM interface (VQModelInterface): ``encode`` returns the
  pre-quantisation latent (after quant_conv); ``decode`` quantises first."""

  n_embed: int = 8192
  beta: float = 0.25

  def setup(self):
    self.encoder = self._encoder(double_z=False)
    self.decoder = self._decoder()
    self.quant_conv = conv(self.embed_dim, self.z_channels, 1, dtype=self.dtype)
    self.quantize = VectorQuantizer(self.n_embed, self.embed_dim, self.beta)
    self.post_quant_conv = conv(self.z_channels, self.embed_dim, 1, dtype=self.dtype)

  def encode(self, x, train: bool = False):
    return self.quant_conv(self.encoder(x, train)).astype(jnp.float32)

  def decode_quantized(self, z_q, train: bool = False):
    return self.decoder(self.post_quant_conv(z_q.astype(self.dtype)), train)

  def decode(self, h, train: bool = False):
    z_q, _, _ = self.quantize(h)
    return self.decode_quantized(z_q, train)

  def decode_code(self, indices, train: bool = False):
    return self.decode_quantized(self.quantize.lookup(indices), train)

  def __call__(self, x, key: jax.Array | None = None, train: bool = False):
    """Returns (reconstruction, codebook loss, indices [B, h, w]). ``key`` is unused (deterministic)."""
    del key
    z_q, codebook_loss, indices = self.quantize(self.encode(x, train))
    return self.decode_quantized(z_q, train), codebook_loss, indices
