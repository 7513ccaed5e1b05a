"""Low-resolution inputs for super-resolution training, made from the high-resolution image.

``bicubic``: the SR3 / paper Table 5 setting, a bicubic (anti-aliased) downscale by the factor.
``bsr_light``: a random blind-degradation chain in the manner of the reference's
``ldm/modules/image_degradation/bsrgan_light.py`` (used by the released bsr_sr model): two blurs
(isotropic or anisotropic Gaussian kernels), a random intermediate downscale with a random
interpolation, the final downscale to exactly 1/factor, Gaussian noise and JPEG compression, the
operations other than the final downscale in random order. The exact parameters of the light
variant are not published; the ranges used are the module constants below.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

DEGRADATIONS = ('bicubic', 'bsr_light')
_INTERPOLATIONS = (Image.BILINEAR, Image.BICUBIC, Image.LANCZOS)
BLUR_SIGMA_ISO = 2.0  # + 0.2 * factor: max sigma of the isotropic kernel (pixels)
BLUR_SIGMA_ANISO = 4.0  # + factor: max sigma of each axis of the anisotropic kernel
NOISE_SIGMA = (2.0, 25.0)  # Gaussian noise std range (of 255)
JPEG_QUALITY = (80, 95)
P_JPEG = 0.9  # the intermediate JPEG step; a final JPEG compression is always applied


def bicubic_downscale(image: np.ndarray, factor: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [H / factor, W / factor, 3] (PIL bicubic, anti-aliased)."""
  h, w = image.shape[:2]
  return np.asarray(Image.fromarray(image).resize((w // factor, h // factor), Image.BICUBIC))


def _resize(x: np.ndarray, hw, interpolation) -> np.ndarray:
  channels = [
    np.asarray(
      Image.fromarray(x[..., c].astype(np.float32), mode='F').resize((hw[1], hw[0]), interpolation)
    )
    for c in range(x.shape[-1])
  ]
  return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """A normalised (possibly anisotropic, rotated) Gaussian kernel of odd ``size``."""
  r = (size - 1) / 2
  y, x = np.mgrid[-r : r + 1, -r : r + 1]
  c, s = np.cos(theta), np.sin(theta)
  u, v = c * x + s * y, -s * x + c * y
  k = np.exp(-0.5 * ((u / max(sigma_x, 1e-3)) ** 2 + (v / max(sigma_y, 1e-3)) ** 2))
  return k / k.sum()


def _blur(x, factor, rng):
  size = 2 * int(rng.integers(2, 12)) + 3
  if rng.random() < 0.5:
    top = BLUR_SIGMA_ANISO + factor
    k = gaussian_kernel(size, top * rng.random(), top * rng.random(), np.pi * rng.random())
  else:
    sigma = (BLUR_SIGMA_ISO + 0.2 * factor) * rng.random()
    k = gaussian_kernel(size, sigma, sigma, 0.0)
  return np.stack([ndimage.convolve(x[..., c], k, mode='mirror') for c in range(x.shape[-1])], -1)


def _jpeg(x, rng):
  quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
  buf = io.BytesIO()
  Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buf, format='JPEG', quality=quality)
  return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'), np.float32) / 255.0


def bsr_light(image: np.ndarray, factor: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [H / factor, W / factor, 3], randomly degraded (see module doc)."""
  h, w = image.shape[:2]
  out_hw = (h // factor, w // factor)
  x = image.astype(np.float32) / 255.0
  ops = ['blur', 'blur', 'down', 'noise', 'jpeg']
  rng.shuffle(ops)
  for op in ops:
    if op == 'blur':
      x = _blur(x, factor, rng)
    elif op == 'down' and rng.random() < 0.8:  # an intermediate size between 1/2f and 1
      s = rng.uniform(1.0, 2.0 * factor)
      hw = (max(out_hw[0], int(h / s)), max(out_hw[1], int(w / s)))
      x = _resize(x, hw, _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])
    elif op == 'noise':
      x = np.clip(x + rng.normal(0, rng.uniform(*NOISE_SIGMA) / 255.0, x.shape), 0.0, 1.0)
    elif op == 'jpeg' and rng.random() < P_JPEG:
      x = _jpeg(x, rng)
  x = _resize(x, out_hw, _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))])
  x = _jpeg(x, rng)
  return np.round(x * 255).astype(np.uint8)


def degrade(image: np.ndarray, factor: int, kind: str, rng: np.random.Generator) -> np.ndarray:
  if kind == 'bicubic':
    return bicubic_downscale(image, factor)
  if kind == 'bsr_light':
    return bsr_light(image, factor, rng)
  raise ValueError(f'config.data.degradation={kind!r}; expected one of {DEGRADATIONS}')
