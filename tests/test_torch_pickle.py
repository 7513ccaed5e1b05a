"""ldm_jax.torch_pickle reads what torch.save writes, without torch and without running the
checkpoint's code; torch is here only to write the files and to be compared with."""

from __future__ import annotations

import argparse
import collections
import os

import numpy as np
import pytest

from ldm_jax import torch_pickle
from ldm_jax.convert.compvis import read_state_dict
from ldm_jax.convert.torch_names import ConversionError
from ldm_jax.errors import UserError
from ldm_jax.tensor_files import LazyTensor

torch = pytest.importorskip('torch')


class Callback:  # a Lightning-style object: its module is never imported by the reader
  def __init__(self):
    self.best = torch.tensor(0.5)
    self.monitor = 'val/loss'


class Exploit:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


def _as_numpy(t):
  t = t.detach()
  if t.dtype == torch.bfloat16:
    import ml_dtypes

    return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.numpy()


def test_dtypes_shared_storages_views_and_strides_equal_torch(tmp_path):
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=g)
  sd = collections.OrderedDict(
    f32=torch.randn(3, 4, generator=g),
    f16=torch.randn(2, 3, generator=g).half(),
    bf16=torch.randn(7, generator=g).bfloat16(),
    f64=torch.randn(2, generator=g).double(),
    i64=torch.arange(5),
    i32=torch.arange(4, dtype=torch.int32),
    u8=torch.arange(3, dtype=torch.uint8),
    flag=torch.tensor([True, False]),
    scalar=torch.tensor(3.5),
    empty=torch.zeros(0, 3),
    base=base,
    transposed=base.t(),  # strides (1, 5) into base's storage
    sliced=base[1:5:2, 2:],  # offset 7, strides (10, 1)
    expanded=torch.ones(1, 3).expand(4, 3),  # stride 0
    param=torch.nn.Parameter(torch.randn(2, 2, generator=g)),
    conv=torch.randn(4, 3, 3, 3, generator=g).permute(0, 2, 3, 1),  # channels-last view
  )
  path = tmp_path / 'model.pth'
  torch.save(sd, path)
  got = torch_pickle.load(str(path))
  assert list(got) == list(sd)
  for k, t in sd.items():
    a = got[k]
    assert isinstance(a, np.ndarray), k
    want = _as_numpy(t)
    assert a.dtype == want.dtype and a.shape == want.shape, k
    np.testing.assert_array_equal(a.astype(np.float64), want.astype(np.float64), err_msg=k)
  got['transposed'][0, 0] = 99.0  # arrays are copies: no aliasing of a shared storage
  assert got['base'][0, 0] != 99.0
  # Read lazily (as the converter does), each tensor is the same, float32 for floating ones;
  # the file is read when a tensor is used.
  lazy = torch_pickle.load(str(path), lazy=True)
  for k, t in sd.items():
    a, want = lazy[k], _as_numpy(t)
    assert isinstance(a, LazyTensor) and a.shape == want.shape, k
    assert a.dtype == (np.float32 if t.is_floating_point() else want.dtype), k
    np.testing.assert_array_equal(np.asarray(a), want.astype(a.dtype), err_msg=k)


def test_a_lightning_checkpoint_with_other_objects_reads_its_state_dict(tmp_path):
  marker = tmp_path / 'ran'
  ckpt = {
    'epoch': 3,
    'global_step': 1200,
    'pytorch-lightning_version': '1.4.2',
    'state_dict': {'model.w': torch.ones(2, 2), 'model_ema.num_updates': torch.tensor(7)},
    'callbacks': {Callback: Callback()},
    'optimizer_states': [{'state': {0: {'exp_avg': torch.zeros(2)}}, 'param_groups': [{'lr': 1}]}],
    'hyper_parameters': argparse.Namespace(lr=1e-4),
    'exploit': Exploit(str(marker)),
  }
  path = tmp_path / 'last.ckpt'
  torch.save(ckpt, path)
  obj = torch_pickle.load(str(path))
  assert not marker.exists()  # the pickle's os.system was never called
  assert isinstance(obj['exploit'], torch_pickle.Opaque) and 'system' in obj['exploit'].name
  assert isinstance(obj['hyper_parameters'], torch_pickle.Opaque)
  assert obj['optimizer_states'][0]['state'][0]['exp_avg'].shape == (2,)
  sd, meta = read_state_dict(str(path))
  assert meta == {'epoch': 3, 'global_step': 1200}
  assert sd['model.w'].dtype == np.float32 and np.asarray(sd['model_ema.num_updates']) == 7
  torch.save({'state_dict': {'w': torch.ones(1), 'bad': Callback()}}, path)
  with pytest.raises(UserError, match=r"'bad' is a .*Callback object, not a tensor"):
    read_state_dict(str(path))


def test_fp16_and_bf16_checkpoints_convert_to_float32(tmp_path):
  from safetensors.torch import save_file

  w = torch.randn(3, 3)
  for dtype in (torch.float16, torch.bfloat16):
    ckpt, st = tmp_path / f'{dtype}.ckpt', tmp_path / f'{dtype}.safetensors'
    torch.save({'state_dict': {'w': w.to(dtype)}}, ckpt)
    save_file({'w': w.to(dtype), 'n': torch.arange(3)}, st)
    for path in (ckpt, st):
      for lazy in (True, False):
        sd, _ = read_state_dict(str(path), lazy=lazy)
        assert sd['w'].dtype == np.float32 and sd['w'].shape == (3, 3)
        np.testing.assert_array_equal(sd['w'], w.to(dtype).float().numpy())
    np.testing.assert_array_equal(sd['n'], np.arange(3))
  # a truncated safetensors file is named when the tensor is read
  st.write_bytes(st.read_bytes()[:-4])
  with pytest.raises(UserError, match='is truncated'):
    [np.asarray(t) for t in read_state_dict(str(st))[0].values()]


def test_files_that_are_not_checkpoints_are_named(tmp_path):
  with pytest.raises(ConversionError, match='no such checkpoint'):
    read_state_dict(str(tmp_path / 'missing.ckpt'))
  junk = tmp_path / 'junk.ckpt'
  junk.write_bytes(os.urandom(1000))
  with pytest.raises(
    torch_pickle.TorchFileError, match='not a readable torch checkpoint: not a zip'
  ):
    torch_pickle.load(str(junk))
  good = tmp_path / 'good.ckpt'
  torch.save({'w': torch.ones(1000)}, good)
  cut = tmp_path / 'cut.ckpt'
  cut.write_bytes(good.read_bytes()[:300])
  with pytest.raises(torch_pickle.TorchFileError, match='not a readable torch checkpoint'):
    torch_pickle.load(str(cut))
  legacy = tmp_path / 'legacy.pt'
  torch.save({'w': torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
  with pytest.raises(torch_pickle.TorchFileError, match='legacy format'):
    torch_pickle.load(str(legacy))


def test_torchscript_modules_give_their_state_dict(tmp_path):
  net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Sequential(torch.nn.Linear(4, 2))
  )
  net[1].running_mean.normal_()
  path = tmp_path / 'module.pt'
  torch.jit.save(torch.jit.script(net), path)
  want = torch.jit.load(path).state_dict()
  got = torch_pickle.module_state_dict(torch_pickle.load(str(path)))
  assert sorted(got) == sorted(want)
  for k, v in want.items():
    np.testing.assert_array_equal(got[k], v.numpy(), err_msg=k)
