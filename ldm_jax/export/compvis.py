"""A workdir out to the PyTorch tools: ``python -m ldm_jax.export --workdir=DIR --out=model.ckpt``.

Writes the CompVis state dict of the newest (or ``--step``) checkpoint, the keys and tensor
layouts the reference's ``LatentDiffusion`` / ``AutoencoderKL`` / ``VQModel`` modules hold
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.*``, the schedule
buffers, ``model_ema.*`` with LitEma's dotless names, ``scale_factor`` where ``scale_by_std``
registers it), as ``.safetensors`` or as a torch ``.ckpt`` (``{'state_dict': ..., 'global_step':
...}``, written without torch: ``torch.load`` and the CompVis scripts read it). A file written
here converts back to the same parameters (``python -m ldm_jax.convert compvis``); for the
released configs the key names and shapes are the reference's own (tests/test_export.py checks
them against the reference's state-dict listings).

Stable Diffusion 2.x's OpenCLIP text tower is written with OpenCLIP's names (``cond_stage_model.
model.transformer.resblocks.i.attn.in_proj_weight``: q, k and v stacked again). A diffusers folder:
``--format=diffusers`` (ldm_jax/export/diffusers.py).
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import zipfile
from typing import Mapping

import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError

_MID_NAMES = ('block_1', 'block_2', 'attn_1')  # the first stage's mid blocks: names, not indices


def torch_module_path(path) -> str:
  """A Flax module path as the reference's dotted module name: folded indices unfolded
  (``input_blocks_4_1`` -> ``input_blocks.4.1``), except the first stage's ``mid.block_1`` etc."""
  out = []
  for i, seg in enumerate(path):
    if i and path[i - 1] == 'mid' and seg in _MID_NAMES:
      out.append(seg)
    else:
      out.append(re.sub(r'(?:_\d+)+$', lambda g: g.group(0).replace('_', '.'), seg))
  return '.'.join(out)


def _conv1d_kernels(tree) -> set:
  """Paths of the UNet AttentionBlock's qkv/proj_out kernels: Conv1d(k=1) ([O, I, 1]) there."""
  from flax.traverse_util import flatten_dict

  out = set()
  for path in flatten_dict(dict(tree)):
    if len(path) >= 2 and path[-1] == 'kernel' and path[-2] == 'qkv':
      out.add(path)
      out.add(path[:-2] + ('proj_out', 'kernel'))
  return out


def torch_tensors(tree, prefix: str) -> dict:
  """A Flax parameter tree (arrays or ShapeDtypeStructs) as reference state-dict entries: convs
  OIhw, linears OI (AttentionBlock's Conv1d OI1), norms/embeddings 'weight'."""
  from flax.traverse_util import flatten_dict

  conv1d = _conv1d_kernels(tree)
  sd = {}
  for path, leaf in flatten_dict(dict(tree)).items():
    *mods, name = path
    if name == 'kernel':
      if len(leaf.shape) == 4:
        leaf = _transpose(leaf, (3, 2, 0, 1))
      else:
        leaf = _transpose(leaf, (1, 0))
        if path in conv1d:
          leaf = _reshape(leaf, tuple(leaf.shape) + (1,))
    torch_name = {'kernel': 'weight', 'scale': 'weight', 'embedding': 'weight'}.get(name, name)
    sd[f'{prefix}{torch_module_path(mods)}.{torch_name}'] = leaf
  return sd


def _transpose(a, axes):
  if isinstance(a, np.ndarray) or hasattr(a, '__array__'):
    return np.ascontiguousarray(np.transpose(np.asarray(a), axes))
  return _Shape(tuple(a.shape[i] for i in axes), a.dtype)


def _reshape(a, shape):
  return np.reshape(a, shape) if isinstance(a, np.ndarray) else _Shape(shape, a.dtype)


class _Shape:  # an abstract leaf: shape only (checking names and shapes without weights)
  def __init__(self, shape, dtype=np.float32):
    self.shape, self.dtype = tuple(shape), dtype


def compvis_state_dict(
  config, params, first_stage=None, ema_params=None, scale_factor=1.0, step: int = 0
) -> dict:
  """The reference's state dict of a model (params: the UNet/cond stage tree of an LDM, or an
  autoencoder's params; leaves may be ShapeDtypeStructs to check names and shapes)."""
  if config.stage != 'ldm':
    return torch_tensors(params, '')
  sd = torch_tensors(params['unet'], 'model.diffusion_model.')
  sd.update(torch_tensors(first_stage, 'first_stage_model.'))
  cond = params.get('cond_stage')
  kind = config.cond_stage.kind
  if kind == 'first_stage':  # the same module in the reference: its copy under both prefixes
    sd.update(torch_tensors(first_stage, 'cond_stage_model.'))
  elif kind == 'sdxl':  # generative-models' conditioner; its denoiser's sigmas for a schedule
    return {**sd, **_sdxl_conditioner(cond), **_ema(config, ema_params, step), **_sigmas(config)}
  elif cond is not None and kind == 'openclip':
    # OpenCLIP's text tower (Stable Diffusion 2.x: FrozenOpenCLIPEmbedder.model), its own names
    from ldm_jax.convert.clip_names import hf_text_to_openclip

    tensors = torch_tensors(cond, 'cond_stage_model.')
    sd.update(hf_text_to_openclip(tensors, 'cond_stage_model.model.'))
  elif cond is not None:
    sd.update(torch_tensors(cond, 'cond_stage_model.'))
  from ldm_jax.convert.compvis import SCHEDULE_BUFFERS
  from ldm_jax.latent_diffusion import build_schedule

  sched = build_schedule(config)
  sd.update({k: np.asarray(getattr(sched, k), np.float32) for k in SCHEDULE_BUFFERS})
  if config.diffusion.scale_by_std:
    sd['scale_factor'] = np.asarray(scale_factor, np.float32)
  return {**sd, **_ema(config, ema_params, step)}


def _ema(config, ema_params, step: int) -> dict:
  """LitEma's entries: ``model_ema.decay``, ``num_updates`` and the UNet's dotless names."""
  if ema_params is None:
    return {}
  sd = {
    'model_ema.decay': np.asarray(config.training.ema_decay, np.float32),
    'model_ema.num_updates': np.asarray(step, np.int32),
  }
  for key, value in torch_tensors(ema_params['unet'], 'model.diffusion_model.').items():
    sd['model_ema.' + key[len('model.') :].replace('.', '')] = value
  return sd


def _sdxl_conditioner(cond) -> dict:
  """``conditioner.embedders.<i>.transformer.*`` (CLIP, transformers' names) and
  ``conditioner.embedders.<i>.model.*`` (OpenCLIP's names, q/k/v stacked)."""
  from ldm_jax.convert.clip_names import hf_text_to_openclip

  sd = {}
  for name in sorted(cond):
    prefix = 'conditioner.embedders.' + name.split('_')[-1] + '.'
    tensors = torch_tensors(cond[name], prefix)
    if 'model' in cond[name]:
      tensors = hf_text_to_openclip(tensors, prefix + 'model.')
    sd.update(tensors)
  return sd


def _sigmas(config) -> dict:
  from ldm_jax.convert.sdxl import sigmas

  return {'denoiser.sigmas': sigmas(config).astype(np.float32)}


def export_workdir(workdir: str, out: str, step: int | None = None) -> dict:
  """Write the CompVis state dict of a workdir's checkpoint to ``out`` (.ckpt or .safetensors)."""
  if not out.endswith(('.ckpt', '.safetensors')):
    raise UserError(f'--out={out!r}: name a .ckpt or .safetensors file')
  config, step, state, first_stage = read_workdir(workdir, step)
  params = jax_to_numpy(state['params'])
  ema = jax_to_numpy(state.get('ema_params'))
  if config.stage != 'ldm':
    sd = compvis_state_dict(config, ema if ema is not None else params)
  else:
    sd = compvis_state_dict(
      config, params, jax_to_numpy(first_stage), ema, float(state['scale_factor']), step
    )
  sd = {k: np.asarray(v) for k, v in sd.items()}
  data = (
    save_safetensors(sd)
    if out.endswith('.safetensors')
    else save_torch({'state_dict': sd, 'global_step': int(step)})
  )
  storage.write_bytes(out, data)
  return {'workdir': workdir, 'step': int(step), 'out': out, 'keys': len(sd), 'stage': config.stage}


def read_workdir(workdir: str, step: int | None = None):
  """(config, step, state, first stage) of a workdir's checkpoint; a LoRA run's adapters merged
  into its base (training.init_from), whose first stage it is: the model the run samples with."""
  import ml_collections

  from ldm_jax import checkpoint as ckpt_lib

  saved, step, state, first_stage = ckpt_lib.load_raw(workdir, step)
  config = ml_collections.ConfigDict(saved)
  if config.get('lora') and config.lora.rank > 0:
    from ldm_jax.sampling.pipeline import merge_lora_run

    adapters = state['ema_params'] if state.get('ema_params') is not None else state['params']
    params, first_stage = merge_lora_run(config, adapters)
    state = {**state, 'params': params, 'ema_params': None}
  return config, step, state, first_stage


def jax_to_numpy(tree):
  import jax

  return None if tree is None else jax.tree.map(np.asarray, tree)


def save_safetensors(sd: Mapping[str, np.ndarray], metadata: dict | None = None) -> bytes:
  from safetensors.numpy import save

  return save({k: np.ascontiguousarray(v) for k, v in sd.items()}, metadata=metadata)


# -- torch.save's zip format, written without torch -----------------------------------------------
_STORAGE = {
  np.dtype(np.float32): 'FloatStorage',
  np.dtype(np.float64): 'DoubleStorage',
  np.dtype(np.float16): 'HalfStorage',
  np.dtype(np.int64): 'LongStorage',
  np.dtype(np.int32): 'IntStorage',
  np.dtype(np.int16): 'ShortStorage',
  np.dtype(np.int8): 'CharStorage',
  np.dtype(np.uint8): 'ByteStorage',
  np.dtype(np.bool_): 'BoolStorage',
}


class _TorchPickler:
  """Protocol-2 opcodes for a tree of dicts, lists, numbers, strings and numpy arrays, each array
  as torch._utils._rebuild_tensor_v2 over a persistent storage (what torch.save writes)."""

  def __init__(self):
    self.out = io.BytesIO()
    self.storages: list[np.ndarray] = []

  def dump(self, obj) -> bytes:
    self.out.write(pickle.PROTO + b'\x02')
    self._save(obj)
    self.out.write(pickle.STOP)
    return self.out.getvalue()

  def _global(self, module: str, name: str):
    self.out.write(pickle.GLOBAL + f'{module}\n{name}\n'.encode())

  def _save(self, obj):
    w = self.out.write
    if isinstance(obj, dict):
      self._global('collections', 'OrderedDict')
      w(pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK)
      for k, v in obj.items():
        self._save(k)
        self._save(v)
      w(pickle.SETITEMS)
    elif isinstance(obj, (list, tuple)):
      w(pickle.MARK)
      for v in obj:
        self._save(v)
      w(pickle.TUPLE if isinstance(obj, tuple) else pickle.LIST)
    elif isinstance(obj, bool):
      w(pickle.NEWTRUE if obj else pickle.NEWFALSE)
    elif isinstance(obj, int):
      w(pickle.LONG1 + bytes([8]) + struct.pack('<q', obj))
    elif isinstance(obj, float):
      w(pickle.BINFLOAT + struct.pack('>d', obj))
    elif isinstance(obj, str):
      data = obj.encode('utf-8')
      w(pickle.BINUNICODE + struct.pack('<I', len(data)) + data)
    elif isinstance(obj, np.ndarray):
      self._tensor(obj)
    elif obj is None:
      w(pickle.NONE)
    else:
      raise TypeError(f'cannot write a {type(obj).__name__} into a torch checkpoint')

  def _tensor(self, a: np.ndarray):
    a = np.ascontiguousarray(a)
    if a.dtype not in _STORAGE:
      raise TypeError(f'no torch storage for dtype {a.dtype}')
    key = len(self.storages)
    self.storages.append(a)
    w = self.out.write
    self._global('torch._utils', '_rebuild_tensor_v2')
    w(pickle.MARK)
    # the storage: persistent id ('storage', <storage class>, key, location, numel)
    w(pickle.MARK)
    self._save('storage')
    self._global('torch', _STORAGE[a.dtype])
    self._save(str(key))
    self._save('cpu')
    self._save(int(a.size))
    w(pickle.TUPLE + pickle.BINPERSID)
    self._save(0)  # storage offset
    self._save(tuple(int(n) for n in a.shape))
    strides = tuple(int(s // a.itemsize) for s in a.strides) if a.ndim else ()
    self._save(strides)
    w(pickle.NEWFALSE)  # requires_grad
    self._global('collections', 'OrderedDict')
    w(pickle.EMPTY_TUPLE + pickle.REDUCE)  # backward hooks
    w(pickle.TUPLE + pickle.REDUCE)


def save_torch(obj, name: str = 'archive') -> bytes:
  """``obj`` as the bytes of a ``torch.save`` file (zip: data.pkl, data/<key>, byteorder, version)."""
  pickler = _TorchPickler()
  data = pickler.dump(obj)
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
    z.writestr(f'{name}/data.pkl', data)
    z.writestr(f'{name}/byteorder', 'little')
    for key, array in enumerate(pickler.storages):
      z.writestr(f'{name}/data/{key}', array.astype(array.dtype.newbyteorder('<')).tobytes())
    z.writestr(f'{name}/version', '3\n')
  return buf.getvalue()
