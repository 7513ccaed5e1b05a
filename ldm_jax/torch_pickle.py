"""Read PyTorch checkpoints (``.ckpt``, ``.pth``, ``.pt``, ``.bin``) without torch and without
running their code.

``torch.save`` writes a zip archive: ``<name>/data.pkl`` (a pickle of the object tree) and one file
``<name>/data/<key>`` per tensor storage. The pickle names the functions that rebuild tensors
(``torch._utils._rebuild_tensor_v2``), ``collections.OrderedDict`` and the storage classes; the
unpickler here maps exactly those to numpy (``np.lib.stride_tricks.as_strided`` over the storage
bytes: shared storages, views, strides and offsets as torch saved them; float16, bfloat16 via
ml_dtypes, integer and bool storages) and imports nothing. Every other class or function the pickle
names (Lightning callbacks, OmegaConf hyper-parameters, optimizer classes) becomes an inert
``Opaque`` placeholder that records its name and arguments: nothing is called, so a checkpoint
cannot execute code, and the tensors around such objects are still read. Code that expects a tensor
and finds a placeholder refuses it with the class's name (``state_dict``).

TorchScript archives (``torch.jit.save``) are the same zip with the scripted module pickled as
``__torch__.*`` objects: ``module_state_dict`` walks their attributes into the names
``module.state_dict()`` gives. torch's pre-1.6 (non-zip) format is not read: the error says so.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

from ldm_jax import storage as st
from ldm_jax.errors import UserError
from ldm_jax.tensor_files import LazyTensor

_STORAGE_DTYPES = {
  'DoubleStorage': np.float64,
  'FloatStorage': np.float32,
  'HalfStorage': np.float16,
  'BFloat16Storage': 'bfloat16',
  'LongStorage': np.int64,
  'IntStorage': np.int32,
  'ShortStorage': np.int16,
  'CharStorage': np.int8,
  'ByteStorage': np.uint8,
  'BoolStorage': np.bool_,
}
_TORCH_DTYPES = {  # torch.<dtype> objects (as _rebuild_tensor_v3 and some metadata name them)
  'float64': np.float64,
  'float32': np.float32,
  'float16': np.float16,
  'bfloat16': 'bfloat16',
  'int64': np.int64,
  'int32': np.int32,
  'int16': np.int16,
  'int8': np.int8,
  'uint8': np.uint8,
  'bool': np.bool_,
}


class TorchFileError(UserError):
  """A file that is not a readable torch checkpoint, or an entry that is not a tensor."""


def _np_dtype(d) -> np.dtype:
  if isinstance(d, str):  # bfloat16
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, d))
  return np.dtype(d)


class Opaque:
  """A class or function a checkpoint named that is not a tensor, a container or a number: kept as
  its name, its arguments and its state, never imported or called."""

  name = '?'

  def __init__(self, *args, **kwargs):
    self.args, self.kwargs, self.state = args, kwargs, None

  def __setstate__(self, state):
    self.state = state

  def __repr__(self):
    return f'<not read: {self.name}>'


def _opaque(module: str, name: str):
  return type(name, (Opaque,), {'name': f'{module}.{name}'})


class _StorageType:
  def __init__(self, dtype):
    self.dtype = dtype


class _LazyStorage:
  """A storage whose bytes are read (each time) when a tensor over it is: ``load(lazy=True)``."""

  def __init__(self, read, dtype, nbytes: int, big_endian: bool):
    self._read, self.dtype, self._nbytes, self._big = read, np.dtype(dtype), nbytes, big_endian
    self.size = nbytes // self.dtype.itemsize

  def view(self, dtype) -> _LazyStorage:
    return _LazyStorage(self._read, dtype, self._nbytes, self._big)

  def array(self) -> np.ndarray:
    data = self._read()
    if self._big:
      return np.frombuffer(data, self.dtype.newbyteorder('>')).astype(self.dtype)
    return np.frombuffer(data, self.dtype)


def _rebuild_tensor(storage, offset, size, stride, *_):
  """torch._utils._rebuild_tensor_v2: a (copied) numpy view of a flat storage; a LazyTensor over
  a lazy storage."""
  size = tuple(size)
  needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
  if size and 0 not in size and needed > storage.size:
    raise TorchFileError(
      f'a tensor of shape {size} reaches past its storage ({storage.size} elements): '
      'the checkpoint is truncated or damaged'
    )
  if isinstance(storage, _LazyStorage):
    read = lambda: _strided(storage.array(), offset, size, stride)
    return LazyTensor(read, size, storage.dtype)
  return _strided(storage, offset, size, stride)


def _strided(storage: np.ndarray, offset, size, stride) -> np.ndarray:
  if not size:
    return storage[offset : offset + 1].reshape(()).copy()
  if 0 in size:
    return np.zeros(size, storage.dtype)
  view = np.lib.stride_tricks.as_strided(
    storage[offset:], shape=size, strides=tuple(s * storage.dtype.itemsize for s in stride)
  )
  return np.array(view, copy=True)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *_):
  if isinstance(dtype, _StorageType) and storage.dtype != _np_dtype(dtype.dtype):
    storage = storage.view(_np_dtype(dtype.dtype))
  return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *_):
  return data


def _numpy_scalar(dtype, data=None):
  return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _encode(text, encoding='latin1'):  # _codecs.encode: how protocol 2 pickles bytes
  return text.encode(encoding)


_ALLOWED = {
  ('collections', 'OrderedDict'): collections.OrderedDict,
  ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
  ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
  ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
  ('torch', 'Size'): tuple,
  ('builtins', 'set'): set,
  ('builtins', 'frozenset'): frozenset,
  ('builtins', 'slice'): slice,
  ('_codecs', 'encode'): _encode,
  ('numpy', 'dtype'): np.dtype,
  ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
  ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
}


class _Unpickler(pickle.Unpickler):
  def __init__(self, data: bytes, storages):
    super().__init__(io.BytesIO(data))
    self._storages = storages

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if module == 'torch' and name in _TORCH_DTYPES:
      return _StorageType(_TORCH_DTYPES[name])
    return _opaque(module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'):
      raise TorchFileError(f'unknown persistent object {pid!r} in the checkpoint')
    storage_type, key = pid[1], str(pid[2])
    dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else np.uint8
    return self._storages(key, _np_dtype(dtype))


def load(path: str, lazy: bool = False) -> Any:
  """The object tree ``torch.save`` wrote to ``path`` (local or remote), tensors as numpy arrays
  (the dtype torch stored, bfloat16 as ml_dtypes.bfloat16), unknown objects as ``Opaque``.
  ``lazy``: tensors as LazyTensors (float32 for floating ones), read from the file when used; the
  file stays open while any of them lives."""
  f = st.open_file(path, 'rb')
  try:
    head = f.read(4)
    f.seek(0)
    if head[:2] != b'PK':
      raise TorchFileError(
        f'{path} is not a readable torch checkpoint: not a zip archive (a truncated download, '
        'another kind of file, or torch < 1.6 legacy format: re-save that with torch >= 1.6, '
        'torch.save(torch.load(p, weights_only=True), p)); download it again'
      )
    try:
      archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
      raise TorchFileError(
        f'{path} is not a readable torch checkpoint: a damaged zip archive ({e}); download it again'
      ) from e
    return _load_archive(archive, path, lazy)
  finally:
    if not lazy:
      f.close()


def _load_archive(archive: zipfile.ZipFile, path: str, lazy: bool = False) -> Any:
  names = archive.namelist()
  pkl = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
  if not pkl:
    raise TorchFileError(f'{path} is not a readable torch checkpoint: a zip without data.pkl')
  root = pkl[0].split('/')[0]
  order = f'{root}/byteorder'
  big = order in names and archive.read(order).strip() == b'big'
  cache: dict[str, np.ndarray] = {}

  def storage(key: str, dtype: np.dtype) -> np.ndarray | _LazyStorage:
    member = f'{root}/data/{key}'
    if lazy:
      info = archive.NameToInfo.get(member)
      if info is None:
        raise TorchFileError(f'{path} is not a readable torch checkpoint: storage {key} is missing')
      return _LazyStorage(lambda: archive.read(member), dtype, info.file_size, big)
    if key not in cache:
      try:
        data = archive.read(member)
      except KeyError:
        raise TorchFileError(
          f'{path} is not a readable torch checkpoint: storage {key} is missing'
        ) from None
      if big:
        cache[key] = np.frombuffer(data, dtype.newbyteorder('>')).astype(dtype)
      else:
        cache[key] = np.frombuffer(data, dtype)
    return cache[key]

  try:
    return _Unpickler(archive.read(pkl[0]), storage).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise TorchFileError(
      f'{path} is not a readable torch checkpoint: its pickle fails ({type(e).__name__}: {e})'
    ) from e


def state_dict(obj: Any, path: str = 'checkpoint') -> tuple[dict[str, np.ndarray], dict]:
  """(state dict, metadata) of a loaded checkpoint: Lightning's ``{'state_dict': ...,
  'global_step': ...}`` or a plain state dict; every value must be a tensor."""
  meta = {}
  if isinstance(obj, Mapping) and 'state_dict' in obj:
    meta = {
      k: obj[k] for k in ('global_step', 'epoch') if isinstance(obj.get(k), (int, np.integer))
    }
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise TorchFileError(f'{path} holds a {type(obj).__name__}, not a state dict')
  out = {}
  for k, v in obj.items():
    if isinstance(v, Opaque):
      raise TorchFileError(
        f'{path}: {k!r} is a {v.name} object, not a tensor; this reader runs no code from the '
        'checkpoint, so such entries are not read'
      )
    if not isinstance(v, (np.ndarray, LazyTensor)):
      raise TorchFileError(f'{path}: {k!r} is a {type(v).__name__}, not a tensor')
    out[k] = v
  return out, meta


def module_state_dict(obj: Any, prefix: str = '') -> dict[str, np.ndarray]:
  """The tensors of a TorchScript module tree (``load`` of a ``torch.jit.save`` archive) under the
  dotted names of ``module.state_dict()``: each ``__torch__`` object's attributes that are tensors,
  then its sub-modules' under their attribute names."""
  state = obj.state if isinstance(obj, Opaque) else None
  if not isinstance(state, Mapping):
    raise TorchFileError(f'{obj!r} is not a scripted module (no attribute state)')
  out = {}
  for name, value in state.items():
    if isinstance(value, np.ndarray):
      out[prefix + name] = value
    elif isinstance(value, Opaque) and isinstance(value.state, Mapping):
      out.update(module_state_dict(value, f'{prefix}{name}.'))
  return out
