"""Layers shared by the first stage, the UNet and the conditioners.

They reproduce PyTorch's defaults where Flax's differ, so that a model trained here starts from the
same distribution as the reference and converted CompVis weights mean the same thing:

* weights and biases of Conv/Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's kaiming_uniform(a=sqrt(5)));
* ``zero_init`` for the reference's ``zero_module`` (weight and bias zero);
* GroupNorm/LayerNorm epsilons are always passed explicitly (Flax defaults to 1e-6 everywhere).
"""

from __future__ import annotations

import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def torch_uniform_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(
  features: int,
  in_features: int,
  kernel_size: int = 3,
  *,
  stride: int = 1,
  padding=None,
  zero_init: bool = False,
  use_bias: bool = True,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Conv:
  """A 2-D conv (NHWC) initialised like torch.nn.Conv2d; default padding keeps the size (k // 2)."""
  if padding is None:
    padding = ((kernel_size // 2, kernel_size // 2),) * 2
  init = nn.initializers.zeros if zero_init else torch_uniform_init(in_features * kernel_size**2)
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(stride, stride),
    padding=padding,
    use_bias=use_bias,
    kernel_init=init,
    bias_init=init,
    dtype=dtype,
    name=name,
  )


def dense(
  features: int,
  in_features: int,
  *,
  use_bias: bool = True,
  zero_init: bool = False,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Dense:
  """A Dense layer initialised like torch.nn.Linear (or zero for ``zero_module``)."""
  init = nn.initializers.zeros if zero_init else torch_uniform_init(in_features)
  return nn.Dense(
    features, use_bias=use_bias, kernel_init=init, bias_init=init, dtype=dtype, name=name
  )


def group_norm(x: jax.Array, name: str, eps: float, float32: bool = False) -> jax.Array:
  """GroupNorm(32 groups). ``float32=True`` is the UNet's GroupNorm32: computed in fp32, cast back."""
  if float32:
    out = nn.GroupNorm(num_groups=32, epsilon=eps, dtype=jnp.float32, name=name)(
      x.astype(jnp.float32)
    )
    return out.astype(x.dtype)
  return nn.GroupNorm(num_groups=32, epsilon=eps, dtype=x.dtype, name=name)(x)


def layer_norm(x: jax.Array, name: str, eps: float = 1e-5) -> jax.Array:
  return nn.LayerNorm(epsilon=eps, dtype=x.dtype, name=name)(x)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2 (F.interpolate(scale_factor=2, mode='nearest')), NHWC."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


def _cudnn_eligible(q: jax.Array, k: jax.Array) -> bool:
  """cuDNN's fused (flash) attention: GPUs, bf16/fp16, head width <= 128 and a multiple of 8.
  LDM_JAX_ATTENTION=xla turns it off."""
  if os.environ.get('LDM_JAX_ATTENTION', 'auto') == 'xla' or jax.default_backend() != 'gpu':
    return False
  d = q.shape[-1]
  return q.dtype in (jnp.bfloat16, jnp.float16) and k.dtype == q.dtype and d <= 128 and d % 8 == 0


def attention(
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  scale: float,
  is_causal: bool = False,
  key_mask: jax.Array | None = None,
) -> jax.Array:
  """Softmax attention over [B, T, heads, d] tensors; logits and softmax in float32.

  Every attention of the model (first-stage AttnBlock, UNet AttentionBlock, CrossAttention) goes
  through here: ``jax.nn.dot_product_attention``, fused by cuDNN on GPUs where the shapes allow
  (bf16/fp16, head width <= 128; the first stage's single 512-wide head and fp32 go to XLA), and
  XLA's einsum-softmax-einsum elsewhere (the same math as the reference's). ``is_causal``: token i
  attends to tokens j <= i (CLIP's text transformer). ``key_mask`` [B, S] (bool): keys to attend to
  (padding left out).
  """
  if key_mask is not None:
    mask = key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(
      q, k, v, scale=scale, is_causal=is_causal, mask=mask, implementation='xla'
    )
  if _cudnn_eligible(q, k):
    try:
      return jax.nn.dot_product_attention(
        q, k, v, scale=scale, is_causal=is_causal, implementation='cudnn'
      )
    except (ValueError, NotImplementedError, RuntimeError):  # shapes cuDNN's checks refuse
      pass
  return jax.nn.dot_product_attention(
    q, k, v, scale=scale, is_causal=is_causal, implementation='xla'
  )
