"""Web-scale image + caption data as tar shards (``config.data.source = 'shards'``), the layout
that img2dataset and webdataset write: each sample is consecutive tar members sharing a key
(the file name up to its first dot), ``KEY.jpg`` (or .jpeg/.png/.webp), ``KEY.txt`` (the caption),
optionally ``KEY.json`` (metadata; its "caption" is used when there is no .txt) and ``KEY.cls``
(an integer label).

``config.data.path`` names the shards: a folder (every ``.tar`` in it), a brace range
(``gs://bucket/laion/{00000..01023}.tar``) or a comma-separated list; local or ``gs://``.

Each process reads its own shards (sorted, process p takes every P-th; there must be at least as
many shards as processes) as one endless stream: every epoch visits its shards in an order seeded
by (seed, epoch, process) and each shard's samples in windows of ``shuffle_window`` consecutive
samples, shuffled within the window (reads stay sequential). Slot s of the stream is a pure
function of (seed, s), found from the shards' member tables without reading the samples before it,
so resuming at any data position costs the same as starting; batches equal an uninterrupted run's
when the number of processes is the same (another process count is another assignment of shards).
A sample that cannot be read (bad image, no caption where the task needs one) is replaced by the
next slot's, logged and counted, as unreadable images are.

A shard's member table comes from one scan of its tar headers, cached in
``$LDM_JAX_CACHE/shard_index`` (keyed by path, size and modification time)."""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import re
import tarfile

import numpy as np

from ldm_jax import storage
from ldm_jax.data.sources import IMAGE_EXTENSIONS, CorruptImage, DataError, decode_example

log = logging.getLogger(__name__)


def expand_shards(spec: str) -> list[str]:
  """The shard paths that ``config.data.path`` names (see the module docstring)."""
  if not spec:
    raise DataError("source='shards' needs config.data.path: a folder of .tar files or a pattern")
  paths = []
  for part in spec.split(','):
    m = re.search(r'\{(\d+)\.\.(\d+)\}', part)
    if m:
      lo, hi = m.group(1), m.group(2)
      width = len(lo) if lo.startswith('0') else 0
      paths += [
        part[: m.start()] + str(i).zfill(width) + part[m.end() :]
        for i in range(int(lo), int(hi) + 1)
      ]
    elif storage.isdir(part):
      paths += sorted(storage.join(part, f) for f in storage.listdir(part) if f.endswith('.tar'))
    else:
      paths.append(part)
  missing = [p for p in paths if not storage.exists(p)]
  if missing:
    raise DataError(f'shard {missing[0]!r} (config.data.path={spec!r}) does not exist')
  if not paths:
    raise DataError(f'config.data.path={spec!r} names no .tar shards')
  return paths


def shard_index(path: str) -> list[dict]:
  """The samples of one tar shard in file order: [{'key', ext: [offset, size], ...}]. Headers
  only are read (data is seeked past); the result is cached on local disk."""
  stat = storage.Path(path).stat()
  tag = hashlib.sha1(f'{storage.resolve(path)}|{stat.length}|{stat.mtime}'.encode()).hexdigest()
  cached = storage.cache_dir('shard_index', tag[:20] + '.json')
  if os.path.exists(cached):
    with open(cached) as f:
      return json.load(f)
  samples: list[dict] = []
  try:
    with storage.open_file(path) as f, tarfile.open(fileobj=f, mode='r:') as tar:
      for member in tar:
        if not member.isfile():
          continue
        if member.offset_data + member.size > stat.length:
          raise tarfile.ReadError(f'{member.name} ends past the end of the file')
        base = member.name.rsplit('/', 1)[-1]
        if base.startswith('.') or '.' not in base:
          continue
        stem, ext = base.split('.', 1)
        key = member.name[: len(member.name) - len(base)] + stem
        if not samples or samples[-1]['key'] != key:
          samples.append({'key': key})
        samples[-1][ext.lower()] = [member.offset_data, member.size]
      f.seek(max(0, stat.length - 1024))
      if f.read(1024).strip(b'\0'):  # no end-of-archive blocks: cut at a header boundary
        raise tarfile.ReadError('no end-of-archive marker (the file was cut short)')
  except (tarfile.TarError, EOFError, OSError) as e:  # truncated or damaged: keep what reads
    if samples:
      samples.pop()  # the sample being read when the damage began may be incomplete
    log.warning(
      'shard %s is damaged (%s: %s): using its first %d samples, skipping the rest',
      path,
      type(e).__name__,
      e,
      len(samples),
    )
    return samples  # not cached: the damaged file may be replaced
  os.makedirs(os.path.dirname(cached), exist_ok=True)
  with open(cached + '.partial', 'w') as f:
    json.dump(samples, f)
  os.replace(cached + '.partial', cached)
  return samples


class ShardStream:
  """One process's endless stream over its shards: ``__call__(slot) -> (example, unreadable
  sample ids)``, the ``examples`` protocol of ``RandomAccessBatches`` (with ``local_positions``).
  Picklable: grain's worker processes open their own files."""

  key = 'image'
  local_positions = True

  def __init__(
    self,
    spec: str,
    image_size: int,
    seed: int,
    random_flip: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    annotations=(),
    shuffle_window: int = 1000,
  ):
    shards = expand_shards(spec)
    if len(shards) < process_count:
      raise DataError(
        f'{len(shards)} shards for {process_count} processes: every process needs at least one; '
        'write more, smaller shards (a few hundred MB each is common)'
      )
    self.ids = list(range(process_index, len(shards), process_count))  # global shard numbers
    self.shards = [shards[i] for i in self.ids]
    self.tables = [shard_index(p) for p in self.shards]
    self.counts = np.array([len(t) for t in self.tables], np.int64)
    if not self.counts.sum():
      raise DataError(
        f'the shards of process {process_index} ({self.shards[:2]}...) hold no samples'
      )
    self.image_size, self.seed, self.random_flip = image_size, seed, random_flip
    self.process_index, self.annotations = process_index, tuple(annotations)
    self.window = max(1, shuffle_window)
    self.bad: set[int] = set()
    self._files = storage.OpenFiles(4)
    self._order: tuple[int, np.ndarray, np.ndarray] | None = None

  def __len__(self):
    return int(self.counts.sum())

  def __getstate__(self):
    return {**self.__dict__, '_order': None}

  def _epoch_order(self, epoch: int):
    if self._order is None or self._order[0] != epoch:
      order = np.random.default_rng([self.seed, epoch, self.process_index]).permutation(
        len(self.shards)
      )
      self._order = (epoch, order, np.cumsum(self.counts[order]))
    return self._order

  def locate(self, slot: int) -> tuple[int, int]:
    """Slot -> (shard number among this process's shards, sample number in it)."""
    n = len(self)
    epoch, r = divmod(slot, n)
    _, order, ends = self._epoch_order(epoch)
    k = bisect.bisect_right(ends.tolist(), r)
    shard = int(order[k])
    i = r - (int(ends[k - 1]) if k else 0)
    w0 = (i // self.window) * self.window
    size = min(self.window, int(self.counts[shard]) - w0)
    perm = np.random.default_rng([self.seed, epoch, self.ids[shard], w0]).permutation(size)
    return shard, w0 + int(perm[i - w0])

  def _read(self, shard: int, span) -> bytes:
    return self._files.read(self.shards[shard], span[0], span[1])

  def sample(self, shard: int, i: int, flip: bool) -> dict:
    entry = self.tables[shard][i]
    name = f'{self.shards[shard]}:{entry["key"]}'
    ext = next((e for e in IMAGE_EXTENSIONS if e[1:] in entry), None)
    if ext is None:
      raise CorruptImage(f'{name}: no image member ({", ".join(IMAGE_EXTENSIONS)})')
    raw = {'image': self._read(shard, entry[ext[1:]])}
    if 'cls' in entry:
      raw['label'] = int(self._read(shard, entry['cls']).decode().strip() or 0)
    if 'caption' in self.annotations:
      if 'txt' in entry:
        raw['caption'] = self._read(shard, entry['txt']).decode('utf-8', 'replace')
      elif 'json' in entry:
        raw['caption'] = str(json.loads(self._read(shard, entry['json'])).get('caption') or '')
      if not raw.get('caption', '').strip():
        raise CorruptImage(f'{name}: no caption (.txt, or "caption" in .json)')
    return decode_example(name, raw, self.image_size, flip)

  def load(self, index: int, flip: bool = False) -> dict:
    """The ``index``-th sample in file order (shards sorted), as a random-access source."""
    ends = np.cumsum(self.counts).tolist()
    shard = bisect.bisect_right(ends, index)
    if shard >= len(self.shards):
      raise IndexError(f'sample {index} of {len(self)}')
    return self.sample(shard, index - (ends[shard - 1] if shard else 0), flip)

  def __call__(self, slot: int):
    found = []
    for j in range(len(self)):
      shard, i = self.locate(slot + j)
      uid = self.ids[shard] << 32 | i
      if uid in self.bad:
        continue
      flip = self.random_flip and np.random.default_rng([self.seed, 1, slot]).random() < 0.5
      try:
        return self.sample(shard, i, flip), found
      except (CorruptImage, ValueError, UnicodeDecodeError) as e:
        self.bad.add(uid)
        found.append(uid)
        log.warning('skipping unreadable sample (%d so far): %s', len(self.bad), e)
    raise DataError(f'none of the {len(self)} samples of this process could be read')
