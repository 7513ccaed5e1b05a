"""Images, written once: the model's [-1, 1] range <-> uint8, torch-exact resizes (the reference's
F.interpolate, which jax.image.resize does not reproduce), grids and PNG files."""

from __future__ import annotations

import io
import math

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import storage


def to_model_range(images_uint8):
  """uint8 [0, 255] -> float32 [-1, 1] (numpy in, numpy out; jax in, jax out)."""
  xp = jnp if isinstance(images_uint8, jax.Array) else np
  return xp.asarray(images_uint8).astype(xp.float32) / 127.5 - 1.0


def to_uint8(images):
  """[-1, 1] -> uint8 [0, 255], rounded and clamped (numpy in, numpy out; jax in, jax out)."""
  xp = jnp if isinstance(images, jax.Array) else np
  return xp.clip(xp.round((xp.asarray(images) + 1.0) * 127.5), 0, 255).astype(xp.uint8)


def unit_to_uint8(images):
  """[0, 1] floats -> uint8, rounded and clamped."""
  return np.clip(np.round(np.asarray(images, np.float32) * 255), 0, 255).astype(np.uint8)


def resize_nearest_torch(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch.nn.functional.interpolate(mode='nearest') on NHWC: source index floor(i * in / out)."""
  idx = lambda n_in, n_out: jnp.minimum(
    jnp.floor(jnp.arange(n_out) * (n_in / n_out)).astype(jnp.int32), n_in - 1
  )
  return x[:, idx(x.shape[1], size[0])][:, :, idx(x.shape[2], size[1])]


def resize_bilinear_torch(x: jax.Array, scale: float) -> jax.Array:
  """torch ``F.interpolate(x, scale_factor=scale, mode='bilinear', align_corners=False)`` on NHWC:
  output size floor(in * scale), source coordinate (dst + 0.5) / scale - 0.5 clamped at 0, no
  antialiasing (so a 0.5 downscale averages 2x2 blocks, unlike ``jax.image.resize``)."""

  def axis(n_in):
    n_out = int(n_in * scale)
    src = jnp.maximum((jnp.arange(n_out) + 0.5) / scale - 0.5, 0.0)
    lo = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
    hi = jnp.minimum(lo + 1, n_in - 1)
    w = (src - lo).astype(x.dtype)
    return lo, hi, w

  lo, hi, w = axis(x.shape[1])
  x = x[:, lo] * (1 - w)[None, :, None, None] + x[:, hi] * w[None, :, None, None]
  lo, hi, w = axis(x.shape[2])
  return x[:, :, lo] * (1 - w)[None, None, :, None] + x[:, :, hi] * w[None, None, :, None]


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+pad)+pad, nrow*(W+pad)+pad, C] grid."""
  n, h, w, c = images.shape
  nrow = nrow or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / nrow))
  grid = np.zeros((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), np.uint8)
  for i, im in enumerate(images):
    r, col = divmod(i, nrow)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top : top + h, left : left + w] = im
  return grid


def save_png(path: str, image: np.ndarray) -> None:
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='PNG')
  storage.write_bytes(path, buf.getvalue())


def pil_to_rgb(image) -> np.ndarray:
  """A PIL image of any mode -> uint8 [H, W, 3] as a viewer shows it: the EXIF orientation applied;
  16-bit, 32-bit and float greys scaled to 8 bits (not clipped: ``convert('RGB')`` turns a 16-bit
  PNG white); transparency (alpha, a palette's or a grey level's) composited over white; bilevel,
  palette, CMYK and YCbCr converted. A ValueError names what cannot be shown faithfully (e.g. a
  float image outside [0, 1] and [0, 255]); image sources skip and count such files."""
  from PIL import ImageOps

  im = ImageOps.exif_transpose(image)
  mode = im.mode
  if mode.startswith('I') or mode == 'F':  # I;16 (16-bit PNG), I (32-bit int), F (float)
    a = np.asarray(im, np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not np.isfinite(a).all():
      raise ValueError(f'{mode} image with non-finite values')
    if mode.startswith('I;16') or (mode == 'I' and 255 < hi <= 65535 and lo >= 0):
      a = a / 257.0  # 16 bits -> 8: 65535 -> 255
    elif mode == 'F' and lo >= 0 and hi <= 1:
      a = a * 255.0
    elif lo < 0 or hi > 255:
      raise ValueError(
        f'{mode} image with values {lo:.6g}..{hi:.6g}: expected 0..255 (or 0..65535, 0..1)'
      )
    grey = np.round(a).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or 'transparency' in im.info:
    rgba = np.asarray(im.convert('RGBA'), np.float32)
    alpha = rgba[..., 3:] / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
  return np.asarray(im.convert('RGB'), np.uint8)
