"""Image fidelity metrics on batches of images in [0, 1] ([B, H, W, C]), shared by the evaluations."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def psnr(a, b):
  """Per-image PSNR in dB of images in [0, 1], [B, H, W, C]."""
  mse = jnp.mean((a - b) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-12))


def _gaussian_window(size: int = 11, sigma: float = 1.5):
  r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  g = jnp.exp(-(r**2) / (2 * sigma**2))
  return g / jnp.sum(g)


def ssim(a, b, data_range: float = 1.0):
  """Per-image mean SSIM of [B, H, W, C] images (valid region of an 11x11 Gaussian window)."""
  g = _gaussian_window()
  c = a.shape[-1]

  def blur(x):  # separable Gaussian, depthwise, 'VALID'
    kh = jnp.tile(g.reshape(11, 1, 1, 1), (1, 1, 1, c))
    kw = jnp.tile(g.reshape(1, 11, 1, 1), (1, 1, 1, c))
    dn = ('NHWC', 'HWIO', 'NHWC')
    x = jax.lax.conv_general_dilated(
      x, kh, (1, 1), 'VALID', dimension_numbers=dn, feature_group_count=c
    )
    return jax.lax.conv_general_dilated(
      x, kw, (1, 1), 'VALID', dimension_numbers=dn, feature_group_count=c
    )

  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a**2
  var_b = blur(b * b) - mu_b**2
  cov = blur(a * b) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
  return jnp.mean(s, axis=(1, 2, 3))
