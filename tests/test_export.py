"""python -m ldm_jax.export writes the reference's state dict: the released first stages' key
names and shapes equal the reference's listings (the LDMs': tests/test_released_models.py), and a
workdir exported to .ckpt (read by torch) and .safetensors converts back to the same parameters."""

from __future__ import annotations

import importlib
import os

import jax
import numpy as np
import pytest

from ldm_jax import export
from tests.helpers import ROOT, compvis_ldm_state_dict, run_cli
from tests.test_released_models import AUTOENCODERS

DATA = os.path.join(ROOT, 'tests', 'data')


def _listing(name):
  import gzip

  rows = {}
  with gzip.open(os.path.join(DATA, name + '.txt.gz'), 'rt') as f:
    for line in f:
      if not line.startswith('#'):
        key, shape, _ = line.rstrip('\n').split('\t')
        rows[key] = tuple(int(x) for x in shape.strip('[]').split(',') if x)
  return rows


@pytest.mark.parametrize('listing', sorted(AUTOENCODERS))
def test_exported_first_stages_are_the_references(listing):
  config = importlib.import_module(f'ldm_jax.configs.released.{AUTOENCODERS[listing]}').get_config()
  from ldm_jax.latent_diffusion import build_first_stage

  model = build_first_stage(config.first_stage)
  shapes = jax.eval_shape(
    lambda k: model.init(k, jax.numpy.zeros((1, 64, 64, 3)))['params'], jax.random.PRNGKey(0)
  )
  sd = export.torch_tensors(shapes, '')
  want = {k: v for k, v in _listing(listing).items() if not k.startswith('loss.')}
  assert {k: tuple(v.shape) for k, v in sd.items()} == want


def test_a_workdir_exports_to_ckpt_and_safetensors_and_converts_back(tmp_path):
  torch = pytest.importorskip('torch')
  from ldm_jax import checkpoint as ckpt_lib
  from ldm_jax.config import load_config_file
  from ldm_jax.convert import compvis as convert

  config = load_config_file(os.path.join(ROOT, 'configs/digits_ldm.py'))
  sd = compvis_ldm_state_dict(config, seed=3, scale_factor=0.5)
  ema_sd = compvis_ldm_state_dict(config, seed=4)
  for k, v in ema_sd.items():
    if k.startswith('model.diffusion_model.'):
      sd['model_ema.' + k[len('model.') :].replace('.', '')] = v
  workdir = str(tmp_path / 'run')
  convert.write_workdir(workdir, config, convert.convert_ldm(sd, config))
  _, _, state, first_stage = ckpt_lib.load_raw(workdir)
  for ext in ('safetensors', 'ckpt'):
    out = str(tmp_path / f'model.{ext}')
    r = run_cli('-m', 'ldm_jax.export', f'--workdir={workdir}', f'--out={out}')
    assert r.returncode == 0, r.stderr[-3000:]
    if ext == 'ckpt':  # torch itself reads what we wrote: the same tensors as the safetensors
      from safetensors.numpy import load_file

      loaded = torch.load(out, map_location='cpu', weights_only=True)
      same = load_file(str(tmp_path / 'model.safetensors'))
      assert loaded['global_step'] == 0 and sorted(loaded['state_dict']) == sorted(same)
      for k, v in same.items():
        np.testing.assert_array_equal(loaded['state_dict'][k].numpy(), v, err_msg=k)
    back = convert.convert_ldm(convert.read_state_dict(out)[0], config)
    for name, tree in (('params', state['params']), ('ema_params', state['ema_params'])):
      for a, b in zip(jax.tree.leaves(back[name]), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(back['first_stage']), jax.tree.leaves(first_stage)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stable_diffusion_2_exports_to_its_own_checkpoint_layout(tmp_path):
  """An SD 2 checkpoint in the CompVis layout (OpenCLIP's text tower under cond_stage_model.model,
  q/k/v stacked in in_proj) converts and exports back to the same keys and the same tensors."""
  from ldm_jax.convert.compvis import convert_compvis
  from tests.test_stable_diffusion import _compvis_checkpoint, _tiny_config

  sd, _, _ = _compvis_checkpoint(2)
  path = str(tmp_path / 'sd2.safetensors')
  from safetensors.numpy import load_file, save_file

  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
  convert_compvis(path, _tiny_config(2), str(tmp_path / 'run'))
  export.export_workdir(str(tmp_path / 'run'), str(tmp_path / 'back.safetensors'))
  back = load_file(str(tmp_path / 'back.safetensors'))
  text = sorted(k for k in sd if k.startswith('cond_stage_model.'))
  assert any(k.endswith('attn.in_proj_weight') for k in text)
  assert sorted(k for k in back if k.startswith('cond_stage_model.')) == text
  for k in text + [k for k in sd if k.startswith(('model.diffusion_model.', 'first_stage_model.'))]:
    np.testing.assert_array_equal(back[k], np.asarray(sd[k], np.float32), err_msg=k)
