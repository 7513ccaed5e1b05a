"""Tiled denoising and decoding for large canvases, as the reference's ``split_input_params`` mode
(used by its super-resolution notebook for inputs of 128 px and more: ks 128, stride 64): the
latent is cut into overlapping tiles, each is denoised (and later decoded) on its own, and the
results are blended with weights that fall off towards each tile's border (the normalised distance
to the border, clipped to [0.01, 0.5]). Memory then grows with the tile, not with the canvas."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

CLIP_MIN, CLIP_MAX = 0.01, 0.5


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
  """Tile origins covering [0, size): every ``stride``, the last one flush with the end."""
  if size <= tile:
    return [0]
  starts = list(range(0, size - tile + 1, stride))
  if starts[-1] != size - tile:
    starts.append(size - tile)
  return starts


def border_weights(h: int, w: int) -> np.ndarray:
  """[h, w] weights: distance to the nearest border, normalised by half the side, clipped."""
  y = np.minimum(np.arange(h), np.arange(h)[::-1]) / (h / 2)
  x = np.minimum(np.arange(w), np.arange(w)[::-1]) / (w / 2)
  return np.clip(np.minimum(y[:, None], x[None, :]), CLIP_MIN, CLIP_MAX).astype(np.float32)


def _blend(
  fn: Callable[[jax.Array, Any], jax.Array],
  x: jax.Array,
  extra: Any,
  tile: int,
  stride: int,
  scale: int,
) -> jax.Array:
  """fn applied to every tile of x (and of the spatial entries of ``extra``, same grid), outputs
  (``scale`` times the tile's size) blended into one canvas."""
  B, H, W = x.shape[:3]
  ys, xs = tile_starts(H, tile, stride), tile_starts(W, tile, stride)
  th, tw = min(tile, H), min(tile, W)
  boxes = [(y, x0) for y in ys for x0 in xs]
  crop = lambda a: jnp.concatenate([a[:, y : y + th, x0 : x0 + tw] for y, x0 in boxes])
  spatial = lambda a: a.ndim == 4 and a.shape[1:3] == (H, W)
  tiled_extra = jax.tree.map(
    lambda a: crop(a) if spatial(a) else jnp.concatenate([a] * len(boxes)), extra
  )
  out = fn(crop(x), tiled_extra)  # [n_tiles * B, scale * th, scale * tw, C]
  wgt = jnp.asarray(border_weights(scale * th, scale * tw))[None, :, :, None]
  acc = jnp.zeros((B, scale * H, scale * W, out.shape[-1]), out.dtype)
  norm = jnp.zeros((1, scale * H, scale * W, 1), out.dtype)
  for i, (y, x0) in enumerate(boxes):
    sl = (slice(None), slice(scale * y, scale * (y + th)), slice(scale * x0, scale * (x0 + tw)))
    acc = acc.at[sl].add(out[i * B : (i + 1) * B] * wgt)
    norm = norm.at[sl].add(wgt)
  return acc / norm


def tiled_model_fn(model_fn, tile: int, stride: int):
  """(x, t, cond) -> eps computed tile by tile; concatenated conditions are tiled with x,
  cross-attention contexts are shared by all tiles."""

  def fn(x, t, cond):
    B = x.shape[0]

    def run(xt, extra):
      n = xt.shape[0] // B
      return model_fn(xt, jnp.concatenate([t] * n), extra)

    return _blend(run, x, cond, tile, stride, 1)

  return fn


def tiled_decode(decode_fn, z: jax.Array, tile: int, stride: int, factor: int) -> jax.Array:
  """decode_fn(latents) -> images, tile by tile, blended in pixel space."""
  return _blend(lambda zt, _: decode_fn(zt), z, None, tile, stride, factor)
