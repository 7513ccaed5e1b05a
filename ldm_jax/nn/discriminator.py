"""The first stage's patch discriminator: taming's ``NLayerDiscriminator`` (pix2pix PatchGAN), with
its weight init (``weights_init``) and both norm choices (BatchNorm2d, or ActNorm with data-dependent
initialisation when ``use_actnorm``).

Layers (names mirror the reference's ``main.{idx}`` keys): conv k4 s2 (bias) + LeakyReLU(0.2); for
n = 1..n_layers-1 conv k4 s2 + norm + LeakyReLU; conv k4 s1 + norm + LeakyReLU; conv k4 s1 -> 1
(bias). Channel widths ndf * min(2^n, 8). With BatchNorm the inner convs have no bias (the reference's
``use_bias = norm_layer != nn.BatchNorm2d``), with ActNorm they do.

BatchNorm follows torch's semantics exactly (biased batch variance to normalise, unbiased variance
into the running average, momentum 0.1, eps 1e-5). Under a sharded jit the batch statistics are those
of the global batch (like SyncBatchNorm), so the result does not depend on the device count.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldm_jax.nn.layers import Conv, torch_uniform_init


def _normal(mean: float, std: float):
  def init(key, shape, dtype=jnp.float32):
    return mean + std * jax.random.normal(key, shape, dtype)

  return init


class BatchNorm2d(nn.Module):
  """torch.nn.BatchNorm2d on NHWC. Params scale/bias (torch weight/bias); batch_stats mean/var
  (running_mean/running_var)."""

  momentum: float = 0.1
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    scale = self.param('scale', _normal(1.0, 0.02), (c,))  # weights_init: N(1, 0.02)
    bias = self.param('bias', nn.initializers.zeros, (c,))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    xf = x.astype(jnp.float32)
    if train:
      mean = jnp.mean(xf, axis=(0, 1, 2))
      var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
      n = xf.size // c
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = (1 - m) * ra_mean.value + m * mean
        ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
    else:
      mean, var = ra_mean.value, ra_var.value
    y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(x.dtype)


class ActNorm(nn.Module):
  """taming's ActNorm: h = scale * (x + loc), with loc = -mean and scale = 1 / (std + 1e-6) of the
  channels of the batch it is initialised on (unbiased std). Initialise the discriminator with
  real data (``model.init(key, images)``), as the reference does on its first training batch."""

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    c = x.shape[-1]
    flat = x.astype(jnp.float32).reshape(-1, c)
    loc = self.param('loc', lambda _: -jnp.mean(flat, axis=0))
    scale = self.param('scale', lambda _: 1.0 / (jnp.std(flat, axis=0, ddof=1) + 1e-6))
    return (scale * (x.astype(jnp.float32) + loc)).astype(x.dtype)


class NLayerDiscriminator(nn.Module):
  """PatchGAN logits [B, h', w', 1] for images [B, H, W, input_nc] in [-1, 1]
  (30x30 for 256x256 and n_layers 3)."""

  input_nc: int = 3
  ndf: int = 64
  n_layers: int = 3
  use_actnorm: bool = False
  dtype: Any = jnp.float32

  def _conv(self, features, in_features, stride, use_bias, name):
    return Conv(
      features,
      4,
      stride=stride,
      padding=((1, 1), (1, 1)),
      use_bias=use_bias,
      kernel_init=_normal(0.0, 0.02),  # weights_init: N(0, 0.02)
      bias_init=torch_uniform_init(in_features * 16),
      dtype=self.dtype,
      name=name,
    )

  def _norm(self, h, idx, train):
    norm = ActNorm(name=f'main_{idx}') if self.use_actnorm else BatchNorm2d(name=f'main_{idx}')
    return norm(h, train)

  @nn.compact
  def __call__(self, x, train: bool = True):
    if x.shape[-1] != self.input_nc:
      raise ValueError(f'discriminator expects {self.input_nc} channels, got input {x.shape}')
    inner_bias = self.use_actnorm
    h = self._conv(self.ndf, self.input_nc, 2, True, 'main_0')(x.astype(self.dtype))
    h = nn.leaky_relu(h, 0.2)
    idx, mult = 2, 1
    for n in range(1, self.n_layers + 1):
      prev, mult = mult, min(2**n, 8)
      stride = 2 if n < self.n_layers else 1
      h = self._conv(self.ndf * mult, self.ndf * prev, stride, inner_bias, f'main_{idx}')(h)
      h = nn.leaky_relu(self._norm(h, idx + 1, train), 0.2)
      idx += 3
    out = self._conv(1, self.ndf * mult, 1, True, f'main_{idx}')(h)
    return out.astype(jnp.float32)
