"""Checkpoint tensors read one at a time: a state dict whose values are ``LazyTensor``s, each read
from the file (and made float32) when the converter asks for it and not kept afterwards. A
conversion then holds the converted parameters and one source tensor at a time, not the file's
bytes, every source tensor and their float32 copies (``python -m ldm_jax.convert`` peaked at
3.5-4x a checkpoint's size before; BENCHMARKS.md "Conversion memory").

``.safetensors`` files are read by their header (8-byte length, JSON of dtypes, shapes and byte
ranges) with one ranged read per tensor, local or remote, without memory-mapping the file (mapped
pages would count against the process as they are touched). torch's zip checkpoints are read by
``torch_pickle.load(lazy=True)``, one storage per tensor. ``python -m ldm_jax.convert`` reads both
this way (``convert.compvis.read_state_dict``).
"""

from __future__ import annotations

import json
import struct
from typing import Any, Callable

import ml_dtypes
import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError

SAFETENSORS_DTYPES = {
  'F64': np.float64,
  'F32': np.float32,
  'F16': np.float16,
  'BF16': ml_dtypes.bfloat16,
  'I64': np.int64,
  'I32': np.int32,
  'I16': np.int16,
  'I8': np.int8,
  'U8': np.uint8,
  'BOOL': np.bool_,
}


def as_float32(a) -> np.ndarray:
  """Floating tensors (float16, bfloat16, float64 too) as float32; integer and bool ones as saved."""
  a = np.asarray(a)
  if np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
    return a
  return a.astype(np.float32, copy=False)


class LazyTensor:
  """A tensor of a checkpoint that is read when it is used: ``np.asarray(t)`` (any other array
  attribute, ``t.reshape``, ``t.T``, reads it too). ``shape`` and ``dtype`` (float32 for floating
  tensors, as ``as_float32`` gives) are known without reading. Nothing is cached."""

  def __init__(self, read: Callable[[], np.ndarray], shape, dtype):
    self._read = read
    self.shape = tuple(int(n) for n in shape)
    self.stored_dtype = d = np.dtype(dtype)  # as in the file
    self.dtype = d if np.issubdtype(d, np.integer) or d == np.bool_ else np.dtype(np.float32)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape))

  def __array__(self, dtype=None, copy=None):
    a = as_float32(self._read())
    return a if dtype is None else a.astype(dtype, copy=False)

  def __getattr__(self, name: str) -> Any:
    if name.startswith('__'):
      raise AttributeError(name)
    return getattr(np.asarray(self), name)

  def __repr__(self) -> str:
    return f'LazyTensor({self.shape}, {self.dtype})'

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index):
    return np.asarray(self)[index]

  # arithmetic reads the tensor (numpy's operators on the array)
  __add__ = lambda self, o: np.asarray(self) + o
  __radd__ = lambda self, o: o + np.asarray(self)
  __sub__ = lambda self, o: np.asarray(self) - o
  __rsub__ = lambda self, o: o - np.asarray(self)
  __mul__ = lambda self, o: np.asarray(self) * o
  __rmul__ = lambda self, o: o * np.asarray(self)
  __truediv__ = lambda self, o: np.asarray(self) / o
  __neg__ = lambda self: -np.asarray(self)

  def derive(self, fn: Callable[[np.ndarray], np.ndarray], shape) -> LazyTensor:
    """A lazy ``fn`` of this tensor (e.g. one of q, k, v split out of an ``in_proj``)."""
    return LazyTensor(lambda: fn(np.asarray(self)), shape, self.stored_dtype)


def stored_precision(value) -> float:
  """The relative precision a floating tensor was stored with (float16: ~1e-3): the tolerance a
  comparison of its values needs (a float16 checkpoint's schedule buffers)."""
  d = getattr(value, 'stored_dtype', None)
  d = np.asarray(value).dtype if d is None else d
  return (
    float(ml_dtypes.finfo(d).eps)
    if np.issubdtype(d, np.floating) or d == ml_dtypes.bfloat16
    else 0.0
  )


def split3(value) -> list:
  """``np.split(value, 3, axis=0)`` as copies, lazily for a LazyTensor (each part reads it)."""
  if isinstance(value, LazyTensor):
    n = value.shape[0] // 3
    shape = (n, *value.shape[1:])
    return [value.derive(lambda a, i=i: a[i * n : (i + 1) * n].copy(), shape) for i in range(3)]
  return [p.copy() for p in np.split(np.asarray(value), 3, axis=0)]


def read_safetensors(path: str) -> dict[str, LazyTensor]:
  """The tensors of a ``.safetensors`` file (local or remote) by name, each a LazyTensor."""
  f = storage.open_file(path, 'rb')
  head = f.read(8)
  size = struct.unpack('<Q', head)[0] if len(head) == 8 else -1
  header = f.read(size) if 0 < size < 2**31 else b''
  try:
    entries = json.loads(header)
  except ValueError:
    entries = None
  if not isinstance(entries, dict):
    f.close()
    raise UserError(
      f'{path} is not a readable safetensors file (its header does not parse): a truncated '
      'download or another kind of file; download it again'
    )
  start = 8 + size
  out = {}
  for name, e in entries.items():
    if name == '__metadata__':
      continue
    if e['dtype'] not in SAFETENSORS_DTYPES:
      f.close()
      raise UserError(f'{path}: {name} has dtype {e["dtype"]}, which ldm_jax does not read')
    dtype = np.dtype(SAFETENSORS_DTYPES[e['dtype']])
    begin, end = e['data_offsets']
    out[name] = LazyTensor(_ranged(f, path, start + begin, end - begin, dtype, e['shape']),
                           e['shape'], dtype)  # fmt: skip
  return out


def _ranged(f, path: str, offset: int, length: int, dtype, shape) -> Callable[[], np.ndarray]:
  def read() -> np.ndarray:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
      raise UserError(f'{path} is truncated (a tensor reaches past its end): download it again')
    return np.frombuffer(data, dtype).reshape(shape)

  return read
