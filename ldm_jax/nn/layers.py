"""Layers shared by the first stage, the UNet and the conditioners.

They reproduce PyTorch's defaults where Flax's differ, so that a model trained here starts from the
same distribution as the reference and converted CompVis weights mean the same thing:

* weights and biases of Conv/Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (torch's kaiming_uniform(a=sqrt(5)));
* ``zero_init`` for the reference's ``zero_module`` (weight and bias zero);
* GroupNorm/LayerNorm epsilons are always passed explicitly (Flax defaults to 1e-6 everywhere).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
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


def _conv_impl(kernel_shape, out_hw: tuple[int, int]) -> str:
  """'windows' (one matrix product over the stacked shifted windows) or 'xla' (lax.conv).

  Where the output is smaller than the kernel (the 3x3 convs of a UNet's 2x2 level), XLA swaps
  input and kernel (``rhs_reversal``) and leaves its fast convolution path on CPU: 17 ms for a
  768-channel conv that is a 1 ms matrix product (5 ms vs 66 for its gradient): on CPU those
  take the windows. Elsewhere XLA's convolution is faster on CPU (forward; within 20% for the
  gradient), and on TPU the windows' padding taps cost 2.25x the FLOPs of XLA's convolution at 2x2
  (the cost model's time 1.8x), so accelerators keep XLA's (BENCHMARKS.md).
  ``LDM_JAX_CONV=xla|windows`` forces either path.
  """
  forced = os.environ.get('LDM_JAX_CONV', 'auto')
  if forced in ('xla', 'windows'):
    return forced
  if forced != 'auto':
    raise ValueError(f"LDM_JAX_CONV={forced!r}: use 'auto', 'xla' or 'windows'")
  kh, kw = kernel_shape[:2]
  if _platform() == 'cpu' and kh * kw > 1 and (out_hw[0] < kh or out_hw[1] < kw):
    return 'windows'
  return 'xla'


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding=((1, 1), (1, 1))) -> jax.Array:
  """torch.nn.functional.conv2d in NHWC/HWIO with explicit ((top, bottom), (left, right)) padding."""
  kh, kw, cin, cout = kernel.shape
  (pt, pb), (pl, pr) = padding
  ho = (x.shape[-3] + pt + pb - kh) // stride + 1
  wo = (x.shape[-2] + pl + pr - kw) // stride + 1
  if _conv_impl(kernel.shape, (ho, wo)) == 'xla':
    return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  windows = [
    xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :]
    for i in range(kh)
    for j in range(kw)
  ]
  stack = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  return jnp.dot(stack, kernel.reshape(kh * kw * cin, cout))


class Conv(nn.Module):
  """A square 2-D conv, NHWC, with nn.Conv's parameters ('kernel' [k, k, in, out], 'bias' [out]),
  so checkpoints and converters see the same tree; the implementation is chosen per call from the
  static shapes (``conv2d``)."""

  features: int
  kernel_size: int
  stride: int = 1
  padding: Any = ((1, 1), (1, 1))
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features))
    bias = self.param('bias', self.bias_init, (self.features,)) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.stride, self.padding)
    return y if bias is None else y + bias


def conv(
  features: int,
  in_features: int,
  kernel_size: int = 3,
  *,
  stride: int = 1,
  padding=None,
  zero_init: bool = False,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> Conv:
  """A 2-D conv (NHWC) with a bias, initialised like torch.nn.Conv2d; default padding keeps the
  size (k // 2)."""
  if padding is None:
    padding = ((kernel_size // 2, kernel_size // 2),) * 2
  init = nn.initializers.zeros if zero_init else torch_uniform_init(in_features * kernel_size**2)
  return Conv(
    features,
    kernel_size,
    stride=stride,
    padding=padding,
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


_TARGET_PLATFORM: contextvars.ContextVar[str | None] = contextvars.ContextVar(
  'ldm_jax_target_platform', default=None
)
_MESH: contextvars.ContextVar[Any] = contextvars.ContextVar('ldm_jax_mesh', default=None)


@contextlib.contextmanager
def lowering(platform: str | None = None, mesh=None):
  """Trace the layers for ``platform`` ('cpu', 'gpu', 'tpu'; default: JAX's default backend) and
  a program over ``mesh`` (its batch sharded over every axis, as the training step's). ``platform``:
  ``ldm_jax.aot`` compiles for TPU topologies on a CPU host. ``mesh``: per-device kernels (the
  Pallas TPU attention) run under ``shard_map`` over it instead of being replicated by GSPMD.
  Trace-time only: use fresh ``jax.jit`` objects inside, as a cached trace would be reused."""
  tokens = []
  if platform is not None:
    tokens.append((_TARGET_PLATFORM, _TARGET_PLATFORM.set(platform)))
  if mesh is not None:
    tokens.append((_MESH, _MESH.set(mesh)))
  try:
    yield
  finally:
    for var, token in reversed(tokens):
      var.reset(token)


def _platform() -> str:
  return _TARGET_PLATFORM.get() or jax.default_backend()


ATTENTION_CHUNK = 256  # queries per block of the chunked path
LOGITS_MAX_BYTES = 1 << 30  # above this, a [B, heads, T, S] float32 logits tensor is not built


def _attention_impl(q: jax.Array, k: jax.Array, is_causal: bool, masked: bool) -> str:
  """Which path ``attention`` takes for these static shapes (``LDM_JAX_ATTENTION`` forces one):

  * 'cudnn': GPUs, bf16/fp16, head width <= 128 and a multiple of 8, no key mask;
  * 'pallas': TPUs, the Pallas flash-attention kernel, where the logits have >= 2**20 entries per
    head (1024 tokens; query and key lengths multiples of 128) and the program is on one chip or
    traced under ``lowering(mesh=...)`` (the training step): the kernel then runs per device;
  * 'chunked': queries in blocks of ATTENTION_CHUNK, each against all keys, on CPU (a block's
    logits stay in cache, the whole tensor does not) and wherever the logits would pass
    LOGITS_MAX_BYTES (Stable Diffusion at 512 px has 4096 tokens at the top level);
  * 'xla': einsum-softmax-einsum (``jax.nn.dot_product_attention(implementation='xla')``).
  """
  forced = os.environ.get('LDM_JAX_ATTENTION', 'auto')
  if forced not in ('auto', 'xla', 'chunked', 'pallas', 'cudnn'):
    raise ValueError(
      f"LDM_JAX_ATTENTION={forced!r}: use 'auto', 'xla', 'chunked', 'pallas' or 'cudnn'"
    )
  if forced != 'auto':
    return forced
  b, t, heads, d = q.shape
  s = k.shape[1]
  platform = _platform()
  if platform == 'gpu' and not masked:
    if q.dtype in (jnp.bfloat16, jnp.float16) and k.dtype == q.dtype and d <= 128 and d % 8 == 0:
      return 'cudnn'
  if platform == 'tpu' and not masked and t % 128 == 0 and s % 128 == 0 and t * s >= 1 << 20:
    if _MESH.get() is not None or jax.device_count() == 1:
      return 'pallas'
  if masked or is_causal or t < 2 * ATTENTION_CHUNK:
    return 'xla'
  if platform == 'cpu' or b * heads * t * s * 4 > LOGITS_MAX_BYTES:
    return 'chunked'
  return 'xla'


def _xla_attention(q, k, v, scale, is_causal=False, mask=None):
  return jax.nn.dot_product_attention(
    q, k, v, scale=scale, is_causal=is_causal, mask=mask, implementation='xla'
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _chunked_attention(q, k, v, scale):
  """Exact softmax attention, queries in blocks (lax.map): a [B, heads, chunk, S] block at a time.
  The gradient is XLA's path's (recomputed from q, k, v): differentiated block by block, the loop
  accumulates dk and dv across blocks, which XLA:CPU runs 1.5x slower than the whole backward."""
  b, t, heads, d = q.shape
  n = -(-t // ATTENTION_CHUNK)
  pad = n * ATTENTION_CHUNK - t
  qb = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else q
  qb = qb.reshape(b, n, ATTENTION_CHUNK, heads, d).swapaxes(0, 1)
  out = jax.lax.map(lambda qc: _xla_attention(qc, k, v, scale), qb)
  out = out.swapaxes(0, 1).reshape(b, n * ATTENTION_CHUNK, heads, v.shape[-1])
  return out[:, :t] if pad else out


def _chunked_fwd(q, k, v, scale):
  return _chunked_attention(q, k, v, scale), (q, k, v)


def _chunked_bwd(scale, residuals, g):
  _, vjp = jax.vjp(lambda q, k, v: _xla_attention(q, k, v, scale), *residuals)
  return vjp(g)


_chunked_attention.defvjp(_chunked_fwd, _chunked_bwd)


def _pallas_attention(q, k, v, scale, is_causal):
  """The Pallas TPU flash-attention kernel ([B, heads, T, d] layout): no [T, S] logits in HBM.
  Under ``lowering(mesh=...)`` it runs per device on the batch shard (shard_map over every mesh
  axis); GSPMD cannot partition a kernel and would gather the whole batch onto each chip."""
  from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention

  def kernel(q, k, v):
    out = flash_attention(
      *(x.swapaxes(1, 2) for x in (q, k, v)), causal=is_causal, sm_scale=float(scale)
    )
    return out.swapaxes(1, 2)

  mesh = _MESH.get()
  if mesh is None or mesh.size == 1 or q.shape[0] % mesh.size:
    return kernel(q, k, v)
  spec = jax.sharding.PartitionSpec(tuple(mesh.axis_names))
  return jax.shard_map(kernel, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)(
    q, k, v
  )


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
  through here, and the path is chosen per backend from the static shapes (``_attention_impl``):
  cuDNN's fused kernel on GPUs, the Pallas flash kernel on TPUs, query blocks on CPU, XLA's
  einsum-softmax-einsum otherwise; all compute the reference's math. ``is_causal``: token i
  attends to tokens j <= i (CLIP's text transformer). ``key_mask`` [B, S] (bool): keys to attend to
  (padding left out).
  """
  impl = _attention_impl(q, k, is_causal, key_mask is not None)
  if key_mask is not None:
    return _xla_attention(q, k, v, scale, is_causal, key_mask[:, None, None, :])
  if impl == 'cudnn':
    try:
      return jax.nn.dot_product_attention(
        q, k, v, scale=scale, is_causal=is_causal, implementation='cudnn'
      )
    except (ValueError, NotImplementedError, RuntimeError):  # shapes cuDNN's checks refuse
      pass
  if impl == 'pallas':
    return _pallas_attention(q, k, v, scale, is_causal)
  if impl == 'chunked' and not is_causal:
    return _chunked_attention(q, k, v, scale)
  return _xla_attention(q, k, v, scale, is_causal)
