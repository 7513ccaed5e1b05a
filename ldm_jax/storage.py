"""Every file the project reads or writes goes through here: local paths and URLs alike (``gs://``,
``s3://`` and whatever else etils.epath understands), so a workdir, a first-stage checkpoint, a
folder dataset or an eval output can live in a bucket. A URL is never made ``abspath``.

GCS credentials are the ones Google's libraries find by themselves (on a Cloud TPU VM or GCE:
the VM's service account; elsewhere ``gcloud auth application-default login``).

etils reads and lists ``gs://`` through gcsfs, always (``EPATH_USE_TF=0`` unless the user sets
it): etils would otherwise pick TensorFlow's GCS client whenever TensorFlow is installed (it is, for
TFDS), and cache that choice at the first path it sees, so which client a process used would
depend on import order; TensorFlow's client also has no emulator setting, so it is the one client
the tests could not run. For a local GCS emulator set ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT``
before the process starts: on import this module points the other clients at it too (TensorStore,
which Orbax writes arrays with, and google-auth)."""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
from typing import Iterator

from etils import epath


def emulator_environment() -> dict[str, str]:
  """The settings that point every GCS client at ``STORAGE_EMULATOR_HOST`` (none without it)."""
  host = os.environ.get('STORAGE_EMULATOR_HOST')
  if not host:
    return {}
  host = host if '://' in host else f'http://{host}'
  return {
    'TENSORSTORE_GCS_HTTP_URL': host,  # TensorStore (Orbax's arrays)
    'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # TensorStore: no OAuth
    'NO_GCE_CHECK': 'true',  # google-auth: no metadata-server probe
    'GOOGLE_CLOUD_PROJECT': 'emulator',
  }


os.environ.setdefault('EPATH_USE_TF', '0')  # etils: gcsfs for gs://, see the module docstring
for _name, _value in emulator_environment().items():
  os.environ.setdefault(_name, _value)


CACHE_ENV = 'LDM_JAX_CACHE'


def cache_dir(*parts: str) -> str:
  """The project's local cache (``$LDM_JAX_CACHE``, default ~/.cache/ldm_jax), or a folder in it."""
  root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'ldm_jax')
  return os.path.join(root, *parts)


def local_copy(path, folder: str) -> str:
  """A local path with the contents of ``path``: the path itself when local, else a copy in the
  cache folder ``folder`` (made once; remade when the remote file's size differs), for readers
  that open files by local name only (ArrayRecord's C++ reader)."""
  path = os.fspath(path)
  if not is_url(path):
    return path
  import hashlib

  key = hashlib.sha1(path.encode()).hexdigest()[:16]
  local = cache_dir(folder, key, os.path.basename(path))
  size = Path(path).stat().length
  if not (os.path.exists(local) and os.path.getsize(local) == size):
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open_file(path) as src:
      tmp = local + '.partial'
      with open(tmp, 'wb') as dst:
        while chunk := src.read(1 << 24):
          dst.write(chunk)
      os.replace(tmp, local)
  return local


class OpenFiles:
  """Read handles kept open for ranged reads (``read(path, offset, size)``): per thread, since a
  file object is not safe to share between threads; at most ``limit`` per thread (oldest closed
  first). Pickles without its handles (grain's worker processes open their own)."""

  def __init__(self, limit: int = 8):
    self.limit = limit
    self._local = threading.local()

  def __getstate__(self):
    return {'limit': self.limit}

  def __setstate__(self, state):
    self.__init__(state['limit'])

  def read(self, path: str, offset: int, size: int) -> bytes:
    files = self._local.__dict__.setdefault('files', {})
    f = files.get(path)
    if f is None:
      if len(files) >= self.limit:
        files.pop(next(iter(files))).close()
      f = files[path] = open_file(path)
    f.seek(offset)
    return f.read(size)


def is_url(path) -> bool:
  return '://' in os.fspath(path)


def resolve(path) -> str:
  """A path as a string that names the same place from any working directory: local paths made
  absolute, URLs unchanged."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(os.path.expanduser(path))


def join(*parts) -> str:
  return os.fspath(epath.Path(*[os.fspath(p) for p in parts]))


def Path(path) -> epath.Path:  # noqa: N802  (a constructor, as epath.Path)
  return epath.Path(os.fspath(path))


def exists(path) -> bool:
  return Path(path).exists()


def isdir(path) -> bool:
  return Path(path).is_dir()


def isfile(path) -> bool:
  p = Path(path)
  return p.exists() and not p.is_dir()


def makedirs(path) -> None:
  """Creates a folder and its parents (on object stores, folders are prefixes: a no-op there as
  far as readers are concerned)."""
  Path(path).mkdir(parents=True, exist_ok=True)


def parent(path) -> str:
  """The folder holding ``path`` ('.' for a bare file name)."""
  return str(Path(path).parent)


def check_writable_dir(path, what: str) -> None:
  """Create the folder ``path`` if needed and check that files can be written in it (local
  folders: a probe file, removed again); errors.UserError naming ``what`` (e.g. '--workdir') and
  the fix otherwise. Commands call it before any work."""
  from ldm_jax.errors import UserError

  if isfile(path):
    raise UserError(f'{what}={path!r} is a file, not a folder: give a folder path')
  try:
    makedirs(path)
    if not is_url(path):
      probe = os.path.join(resolve(path), f'.ldm_jax_write_test_{os.getpid()}')
      with open(probe, 'w') as f:
        f.write('')
      os.remove(probe)
  except OSError as e:
    raise UserError(
      f'cannot write into {what}={path!r} ({type(e).__name__}: {e.strerror or e}): give a '
      'writable folder'
    ) from e


def listdir(path) -> list[str]:
  return sorted(p.name for p in Path(path).iterdir())


def walk(root) -> Iterator[tuple[str, list[str], list[str]]]:
  """os.walk (following links) for local paths and URLs: (folder, sorted subfolder names, sorted
  file names), top-down."""
  if not is_url(root):
    for folder, dirs, files in os.walk(root, followlinks=True):
      dirs.sort()
      yield folder, dirs, sorted(files)
    return
  scheme = os.fspath(root).split('://')[0]
  for folder, dirs, files in Path(root).walk():
    folder = os.fspath(folder)  # etils' fsspec walk drops the scheme: put it back
    yield folder if is_url(folder) else f'{scheme}://{folder}', sorted(dirs), sorted(files)


def relpath(path, root) -> str:
  """``path`` relative to ``root`` ('/'-separated for URLs)."""
  path, root = os.fspath(path), os.fspath(root)
  if not is_url(path):
    return os.path.relpath(path, root)
  if not path.startswith(root.rstrip('/') + '/'):
    raise ValueError(f'{path!r} is not inside {root!r}')
  return path[len(root.rstrip('/')) + 1 :]


def read_bytes(path) -> bytes:
  return Path(path).read_bytes()


def read_text(path) -> str:
  return Path(path).read_text()


def open_file(path, mode: str = 'rb'):
  """A file object for reading or writing (binary modes: 'rb', 'wb', 'ab'; text: 'r', 'w', 'a')."""
  return Path(path).open(mode)


def write_bytes(path, data: bytes) -> None:
  """Writes the whole file at once: a reader never sees half of it. Local files go through a
  temporary file in the same folder and a rename; an object store's upload is atomic."""
  path = os.fspath(path)
  if is_url(path):
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


def append_text(path, text: str) -> None:
  """Adds to the end of a (small) text file. Object stores cannot append: the file is read and
  written back whole, atomically."""
  path = os.fspath(path)
  if not is_url(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a', encoding='utf-8') as f:
      f.write(text)
    return
  old = read_text(path) if exists(path) else ''
  write_text(path, old + text)


def rename(src, dst) -> None:
  """Moves a file or a folder (on object stores: copy, then delete)."""
  Path(dst).parent.mkdir(parents=True, exist_ok=True)
  if is_url(src) and isdir(src):
    copytree(src, dst)
    Path(src).rmtree()
  else:
    Path(src).rename(Path(dst))


def remove(path) -> None:
  """Deletes one file (none there: nothing to do)."""
  Path(path).unlink(missing_ok=True)


def copytree(src, dst) -> None:
  """Copies a folder's files (local or remote, either way)."""
  for folder, _, files in walk(src):
    rel = relpath(folder, src) if folder.rstrip('/') != os.fspath(src).rstrip('/') else ''
    target = Path(dst) / rel if rel not in ('', '.') else Path(dst)
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
      (target / name).write_bytes(Path(join(folder, name)).read_bytes())


def save_npz(path, **arrays) -> None:
  import numpy as np

  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(path, buf.getvalue())


def load_npz(path) -> dict:
  """All arrays of an .npz file, read into memory."""
  import numpy as np

  with np.load(io.BytesIO(read_bytes(path))) as f:
    return {k: f[k] for k in f.files}


def load_npy(path):
  import numpy as np

  return np.load(io.BytesIO(read_bytes(path)))


# What a restore error says about the checkpoint. Damage: missing or truncated files, unreadable
# metadata (Orbax, TensorStore and JSON messages); transient: the storage or network failed
# (HTTP 429/5xx, gRPC-style UNAVAILABLE, timeouts, resets). Anything else (out of memory,
# permissions, a bug) is neither: the checkpoint is not moved and the run stops with the cause.
_CORRUPT = (
  'DATA_LOSS',
  'FAILED_PRECONDITION: Error reading',
  'Error decoding',
  'ZSTD',
  'checksum',
  'does not exist',
  'Unknown key',
  'Expecting value',
  'Expecting property name',
  'Unterminated string',
  'Extra data',
  'Invalid control character',
  'not finalized',
  'OUT_OF_RANGE',
  'NOT_FOUND',
  'truncated',
)
_TRANSIENT = (
  'UNAVAILABLE',
  'DEADLINE_EXCEEDED',
  'ABORTED',
  'Connection reset',
  'Connection refused',
  'Connection aborted',
  'timed out',
  'Timeout',
  'Temporary failure',
  ' 429',
  ' 500',
  ' 502',
  ' 503',
  ' 504',
)


def first_line(error: BaseException) -> str:
  """The exception's type and the first line of its message (at most 200 characters)."""
  return f'{type(error).__name__}: {(str(error).splitlines() or [""])[0][:200]}'


def failure_kind(error: BaseException) -> str:
  """'corrupt', 'transient' or 'other' for an exception raised while reading stored data, e.g. a
  checkpoint (its whole chain is looked at: Orbax wraps TensorStore's errors)."""
  chain, e = [], error
  while e is not None and e not in chain:
    chain.append(e)
    e = e.__cause__ or e.__context__
  if any(isinstance(c, (MemoryError, PermissionError)) for c in chain):
    return 'other'
  text = ' '.join(f'{type(c).__name__}: {c}' for c in chain)
  if 'RESOURCE_EXHAUSTED' in text or 'PERMISSION_DENIED' in text or 'out of memory' in text:
    return 'other'
  if any(isinstance(c, (ConnectionError, TimeoutError)) for c in chain) or any(
    p in text for p in _TRANSIENT
  ):
    return 'transient'
  if any(isinstance(c, (FileNotFoundError, json.JSONDecodeError)) for c in chain) or any(
    p in text for p in _CORRUPT
  ):
    return 'corrupt'
  return 'other'
