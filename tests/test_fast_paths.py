"""The per-backend paths of the conv and attention layers compute the reference's math.

The convolution's 'windows' path (one matrix product over stacked shifted windows) and the
attention's query-chunked and Pallas TPU paths are compared with XLA's convolution and
einsum-softmax-einsum, forward and gradient; the Pallas kernel runs in Pallas' TPU interpret mode on
the CPU, and is compiled for a TPU topology (libtpu) per device under a mesh.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.nn import layers


@pytest.mark.parametrize(
  'hw,k,stride,padding,cin',
  [
    (2, 3, 1, None, 16),  # output smaller than the kernel: the UNet's 2x2 level
    (1, 3, 1, None, 8),
    (7, 3, 1, None, 8),
    (5, 3, 2, ((0, 1), (0, 1)), 8),  # the first stage's Downsample
    (6, 4, 2, ((1, 1), (1, 1)), 4),  # the discriminator's 4x4 stride-2 convs
    (3, 3, 1, ((0, 0), (0, 0)), 4),
  ],
)
def test_conv_windows_equal_xla_forward_and_gradient(monkeypatch, hw, k, stride, padding, cin):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, hw, hw + 1, cin)), jnp.float32)
  module = layers.conv(12, cin, k, stride=stride, padding=padding)
  params = module.init(jax.random.key(0), x)
  # the same tree as flax's nn.Conv: checkpoints and converters are unchanged
  flax_conv = nn.Conv(12, (k, k), strides=(stride, stride), padding=padding or ((k // 2,) * 2,) * 2)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
    jnp.shape, flax_conv.init(jax.random.key(0), x)
  )

  def loss(p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  out = {}
  for impl in ('xla', 'windows'):
    monkeypatch.setenv('LDM_JAX_CONV', impl)
    out[impl] = (
      jax.jit(module.apply)(params, x),
      jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x),
    )
  np.testing.assert_allclose(out['windows'][0], flax_conv.apply(params, x), atol=2e-6)
  np.testing.assert_allclose(out['windows'][0], out['xla'][0], atol=2e-6)
  for a, b in zip(jax.tree.leaves(out['windows'][1]), jax.tree.leaves(out['xla'][1])):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


def test_conv_path_choice():
  assert jax.default_backend() == 'cpu'
  assert layers._conv_impl((3, 3, 768, 768), (2, 2)) == 'windows'  # smaller than the kernel
  assert layers._conv_impl((3, 3, 768, 768), (1, 1)) == 'windows'
  assert layers._conv_impl((3, 3, 192, 192), (32, 32)) == 'xla'
  assert layers._conv_impl((1, 1, 192, 192), (1, 1)) == 'xla'  # a matrix product already
  with layers.lowering('tpu'):  # padding taps cost more than XLA's own conv there
    assert layers._conv_impl((3, 3, 768, 768), (2, 2)) == 'xla'


def test_bad_path_names_are_refused(monkeypatch):
  monkeypatch.setenv('LDM_JAX_CONV', 'fast')
  with pytest.raises(ValueError, match="LDM_JAX_CONV='fast'"):
    layers._conv_impl((3, 3, 8, 8), (2, 2))
  monkeypatch.setenv('LDM_JAX_ATTENTION', 'flash')
  q = jnp.zeros((1, 4, 1, 8))
  with pytest.raises(ValueError, match="LDM_JAX_ATTENTION='flash'"):
    layers.attention(q, q, q, 1.0)


def _qkv(b, t, s, heads, d, seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.normal(size=(b, n, heads, d)), dtype) for n in (t, s, s))


def _attention_and_grad(monkeypatch, impl, q, k, v, scale):
  monkeypatch.setenv('LDM_JAX_ATTENTION', impl)
  f = lambda q, k, v: layers.attention(q, k, v, scale)
  loss = lambda q, k, v: jnp.sum(jnp.sin(f(q, k, v)))
  return jax.jit(f)(q, k, v), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)


@pytest.mark.parametrize('t,s', [(600, 600), (512, 77), (1024, 1024)])
def test_chunked_attention_equals_xla(monkeypatch, t, s):
  q, k, v = _qkv(2, t, s, 3, 16)
  ref, ref_grad = _attention_and_grad(monkeypatch, 'xla', q, k, v, 16**-0.5)
  out, grad = _attention_and_grad(monkeypatch, 'chunked', q, k, v, 16**-0.5)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  for a, b in zip(grad, ref_grad):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_attention_path_choice(monkeypatch):
  monkeypatch.delenv('LDM_JAX_ATTENTION', raising=False)
  q1024, q256 = jnp.zeros((1, 1024, 8, 40)), jnp.zeros((1, 256, 8, 40))
  bf = q1024.astype(jnp.bfloat16)
  with layers.lowering('cpu'):
    assert layers._attention_impl(q1024, q1024, False, False) == 'chunked'
    assert layers._attention_impl(q256, q256, False, False) == 'xla'
    assert layers._attention_impl(q1024, q1024, True, False) == 'xla'  # CLIP's causal text
    assert layers._attention_impl(q1024, q1024, False, True) == 'xla'  # masked keys
  with layers.lowering('gpu'):
    assert layers._attention_impl(bf, bf, False, False) == 'cudnn'
    assert layers._attention_impl(q1024, q1024, False, False) == 'xla'  # fp32: not cuDNN's
    huge = jnp.zeros((16, 4096, 8, 40))  # 8 GiB of logits
    assert layers._attention_impl(huge, huge, False, False) == 'chunked'
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ('data', 'fsdp'))
  with layers.lowering('tpu', mesh):
    assert layers._attention_impl(bf, bf, False, False) == 'pallas'
    assert layers._attention_impl(q256, q256, False, False) == 'xla'  # short: XLA's fusion
    assert layers._attention_impl(bf, bf[:, :77], False, False) == 'xla'  # 77 text tokens


def test_pallas_tpu_attention_in_interpret_mode_equals_xla(monkeypatch):
  """The Pallas TPU flash kernel, run by Pallas' TPU interpreter on the CPU: forward and its
  custom backward kernels."""
  from jax.experimental.pallas import tpu as pltpu

  q, k, v = _qkv(1, 256, 256, 2, 32, seed=1)
  ref, ref_grad = _attention_and_grad(monkeypatch, 'xla', q, k, v, 32**-0.5)
  with pltpu.force_tpu_interpret_mode():
    out, grad = _attention_and_grad(monkeypatch, 'pallas', q, k, v, 32**-0.5)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  for a, b in zip(grad, ref_grad):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_pallas_attention_compiles_per_device_for_a_tpu_slice():
  """Compiled for a v5e 2x2 slice (libtpu, no TPU needed): under a mesh the kernel runs on each
  chip's batch shard (no gather of the batch), and holds no [T, S] logits in HBM, which XLA's path
  does (an estimate from XLA's memory analysis)."""
  from ldm_jax import aot

  devices = aot.topology_devices('v5e:2x2')
  mesh = jax.sharding.Mesh(np.array(devices).reshape(4, 1), ('data', 'fsdp'))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(('data', 'fsdp')))
  q = jax.ShapeDtypeStruct((8, 4096, 8, 40), jnp.bfloat16, sharding=batch)
  temps = {}
  for impl in ('xla', 'pallas'):
    with pytest.MonkeyPatch.context() as mp:
      mp.setenv('LDM_JAX_ATTENTION', impl)
      with layers.lowering('tpu', mesh):
        compiled = jax.jit(lambda q, k, v: layers.attention(q, k, v, 40**-0.5)).lower(q, q, q)
        compiled = compiled.compile()
    text = compiled.as_text()
    assert 'all-gather' not in text
    temps[impl] = compiled.memory_analysis().temp_size_in_bytes
    if impl == 'pallas':
      assert 'tpu_custom_call' in text
  logits_per_chip = 2 * 8 * 4096 * 4096 * 4  # two examples, 8 heads, float32
  assert temps['xla'] >= logits_per_chip > 100 * temps['pallas']
