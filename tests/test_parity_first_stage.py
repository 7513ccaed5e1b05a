"""KL and VQ first stages against the PyTorch peer (tests/torch_first_stage.py) at the same random
weights: encoder moments / latents, decoder output, quantizer indices (float32, <= 1e-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from ldm_jax.convert.torch_names import load_state_dict  # noqa: E402
from ldm_jax.nn.autoencoder import AutoencoderKL, VQModel  # noqa: E402
from tests.torch_first_stage import FirstStage  # noqa: E402

ARCH = dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,), resolution=32)


def _pair(kind, attn_type='vanilla', seed=0):
  torch.manual_seed(seed)
  n_embed = 64 if kind == 'vq' else 0
  ref = FirstStage(kind, 4, n_embed=n_embed, attn_type=attn_type, **ARCH).eval()
  with torch.no_grad():  # GroupNorm affine params away from (1, 0), so they matter
    for name, p in ref.named_parameters():
      if 'norm' in name:
        p.add_(torch.randn_like(p) * 0.2)
  common = dict(
    embed_dim=4, z_channels=4, in_channels=3, out_ch=3, attn_type=attn_type, dropout=0.0, **ARCH
  )
  ours = AutoencoderKL(**common) if kind == 'kl' else VQModel(n_embed=n_embed, beta=0.25, **common)
  template = jax.eval_shape(
    lambda k: ours.init(k, jnp.zeros((1, 32, 32, 3))), jax.random.PRNGKey(0)
  )['params']
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  return ref, ours, load_state_dict(template, sd)


def _x(seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)


def _nchw(a):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


@pytest.mark.parametrize('attn_type', ['vanilla', 'none'])
def test_kl_encoder_and_decoder_match_torch(attn_type):
  ref, ours, params = _pair('kl', attn_type)
  x = _x()
  with torch.no_grad():
    moments = _nhwc(ref.encode(_nchw(x)))
  post = ours.apply({'params': params}, jnp.asarray(x), method='encode')
  mean, logvar = np.split(moments, 2, axis=-1)
  np.testing.assert_allclose(np.asarray(post.mean), mean, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(post.logvar), np.clip(logvar, -30, 20), atol=1e-4, rtol=0)
  z = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    want = _nhwc(ref.decode(_nchw(z)))
  got = np.asarray(ours.apply({'params': params}, jnp.asarray(z), method='decode'))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_vq_latents_indices_and_decoder_match_torch():
  ref, ours, params = _pair('vq')
  x = _x(3)
  with torch.no_grad():
    h = ref.encode(_nchw(x))
    _, idx = ref.quantize(h)
    want = _nhwc(ref.decode(h))
  got_h = np.asarray(ours.apply({'params': params}, jnp.asarray(x), method='encode'))
  np.testing.assert_allclose(got_h, _nhwc(h), atol=1e-4, rtol=0)
  rec, _, indices = ours.apply({'params': params}, jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(indices), idx.numpy())
  got = np.asarray(ours.apply({'params': params}, jnp.asarray(_nhwc(h)), method='decode'))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(rec), want, atol=1e-4, rtol=0)
