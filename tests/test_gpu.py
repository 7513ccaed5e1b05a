"""Checks that need a GPU (skipped elsewhere; scripts/device_check.sh runs them on a lent one):
cuDNN's fused attention against the XLA path, and bf16 sampling against fp32 from the same
latents."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
  jax.devices()[0].platform != 'gpu', reason='needs a GPU (scripts/device_check.sh)'
)


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
@pytest.mark.parametrize('shape', [(2, 4096, 8, 40), (2, 1024, 8, 80), (4, 256, 8, 64)])
def test_cudnn_attention_matches_the_xla_path(shape, dtype, monkeypatch):
  """SD 1.x's attention shapes (64x64 and 32x32 latents, 8 heads of 40 / 80) and a 64-wide one."""
  from ldm_jax.nn import layers

  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))
  scale = shape[-1] ** -0.5
  out = {}
  for path in ('cudnn', 'xla'):
    monkeypatch.setitem(os.environ, 'LDM_JAX_ATTENTION', path)
    fn = jax.jit(lambda q, k, v: layers.attention(q, k, v, scale))
    hlo = fn.lower(q, k, v).compile().as_text()
    assert ('cudnn' in hlo.lower()) == (path == 'cudnn'), path  # no silent fallback
    out[path] = np.asarray(fn(q, k, v))
  ref = np.abs(out['xla']).max()
  assert np.abs(out['cudnn'].astype(np.float32) - out['xla'].astype(np.float32)).max() < 2e-2 * ref


def test_bf16_sampling_stays_close_to_fp32():
  import ldm_jax
  from ldm_jax.latent_diffusion import LatentDiffusion, latent_shape
  from tests.helpers import tiny_task_config

  config = tiny_task_config('class')
  pipe = ldm_jax.load(config)
  latents = np.random.default_rng(0).normal(size=(4,) + latent_shape(config)).astype(np.float32)
  kw = dict(class_label=3, steps=20, guidance_scale=3.0, latents=latents, return_float=True)
  fp32 = pipe.sample(4, **kw)
  pipe.ldm = LatentDiffusion.from_config(config, 'bfloat16')
  pipe._fns.clear()
  bf16 = pipe.sample(4, **kw)
  mse = float(np.mean((np.clip(fp32, -1, 1) - np.clip(bf16, -1, 1)) ** 2) / 4)
  assert 10 * np.log10(1 / max(mse, 1e-12)) > 30  # PSNR in dB on [0, 1] images
