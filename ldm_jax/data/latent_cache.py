"""Cached-latent training: encode a random-access dataset once with the frozen first stage and train
the LDM on the stored latents. KL: the posterior moments are stored and a fresh sample is drawn every
step (as training on images would); VQ: the pre-quantisation latents. With random flips both the
image and its mirror are encoded. Captions are kept (text-to-image); tasks whose condition is made
from the pixels or follows the crop (super-resolution, inpainting, layout, semantic) train from
images.

Two homes: host memory (``config.data.cache_latents``, ``LatentCache``), built at every start by
every process, for datasets that fit (the digits: 1,500 x 8x8x6 floats); and a folder on disk or in
a bucket (``config.data.latent_cache=DIR``, ``DiskLatentCache``), built once by
``python -m ldm_jax.cache_latents`` and read by index like images.

A disk cache holds ``stamp.json`` (what it was made from: the first stage's settings and a
fingerprint of its weights, the data's source and preprocessing, the flips) and chunks of
``CHUNK`` consecutive examples: ``chunk-KKKKKK.npy`` (float32 [n, F, h, w, c], F = 2 with flips:
the image and its mirror) and then ``chunk-KKKKKK.json`` (labels, unreadable images, captions),
whose presence marks the chunk complete. Process p of P builds chunks p, p + P, ... on its own
devices; a rerun skips complete chunks, so an interrupted build resumes, and the chunks do not
depend on the number of processes or the batch size."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import storage
from ldm_jax.data.sources import CorruptImage, DataError
from ldm_jax.images import to_model_range
from ldm_jax.runtime import progress

log = logging.getLogger(__name__)


class LatentCache:
  key = 'moments'
  in_memory = True  # read by threads: worker processes would each get a copy

  def __init__(self, latents: np.ndarray, labels: np.ndarray, bad=(), captions=None):
    self.latents, self.labels = latents, labels  # latents: [2 (flip), N, h, w, c]
    self.captions = captions  # text-to-image: each image's captions (flip-independent)
    self.bad = set(bad)  # unreadable images: raise like the image source would

  def __len__(self):
    return self.labels.shape[0]

  def load(self, index: int, flip: bool = False) -> dict:
    if index in self.bad:
      raise CorruptImage(f'image {index} was unreadable when the cache was built')
    example = {'moments': self.latents[int(flip)][index], 'label': int(self.labels[index])}
    if self.captions is not None:
      example['caption'] = self.captions[index]
    return example


def encode_dataset(source, encode_fn, batch_size: int, flips: bool) -> LatentCache:
  """encode_fn: uint8->[-1,1] image batch [B, H, W, 3] -> latents [B, h, w, c] (jitted, any B that
  is a multiple of batch_size). Unreadable images get zero latents and are marked, so that the
  batch iterator skips and counts them as it does for images; none readable is a DataError."""
  n = len(source)
  labels, bad = np.zeros(n, np.int32), set()
  captions = [None] * n
  out = [[], []]  # per flip: latents of each batch, None where no image of it could be read
  jobs = [
    (flip, list(range(start, min(n, start + batch_size))))
    for flip in ((False, True) if flips else (False,))
    for start in range(0, n, batch_size)
  ]
  for flip, idx in progress(jobs, n * (1 + flips), 'latent cache', size=lambda job: len(job[1])):
    imgs = {}
    for i in idx:
      try:
        example = source.load(i, flip)
      except CorruptImage as e:
        if i not in bad:
          log.warning('latent cache: skipping unreadable image (%d so far): %s', len(bad) + 1, e)
        bad.add(i)
        continue
      imgs[i], labels[i] = example['image'], example['label']
      captions[i] = example.get('caption')
    if not imgs:
      out[int(flip)].append((len(idx), None))
      continue
    shape = next(iter(imgs.values())).shape
    batch = np.zeros((batch_size, *shape), np.uint8)
    for j, i in enumerate(idx):
      if i in imgs:
        batch[j] = imgs[i]
    latents = np.array(jax.device_get(encode_fn(to_model_range(batch))))[: len(idx)]
    latents[[j for j, i in enumerate(idx) if i not in imgs]] = 0
    out[int(flip)].append((len(idx), latents))
  shapes = [lat.shape[1:] for o in out for _, lat in o if lat is not None]
  if not shapes:
    raise DataError(f'none of the {n} images could be read ({len(bad)} unreadable)')
  fill = lambda count, lat: np.zeros((count, *shapes[0]), np.float32) if lat is None else lat
  out = [[fill(*b) for b in o] for o in out]
  latents = [np.concatenate(o) for o in out if o]
  if len(latents) == 1:
    latents = latents * 2
  log.info(
    'latent cache: %d images -> %s latents (%s flips)',
    n,
    latents[0].shape[1:],
    'with' if flips else 'no',
  )
  has_captions = any(c is not None for c in captions)
  return LatentCache(np.stack(latents), labels, bad, captions if has_captions else None)


CACHE_FORMAT = 'ldm_jax.latent_cache/1'
CHUNK = 1024


def params_fingerprint(params) -> str:
  """A fingerprint of a parameter tree that does not depend on how its arrays are sharded (or on
  how many processes hold them): per leaf, two position-weighted sums of the float32 bit patterns
  modulo 2^32 (integer sums are exact in any order), hashed together with the leaf names."""

  def sums(x):
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32).reshape(-1)
    i = jnp.arange(bits.size, dtype=jnp.uint32)
    w1 = i * jnp.uint32(2654435761) + jnp.uint32(1)
    w2 = (i ^ jnp.uint32(0x9E3779B9)) * jnp.uint32(2246822519) + jnp.uint32(3)
    return jnp.stack([jnp.sum(bits * w1, dtype=jnp.uint32), jnp.sum(bits ^ w2, dtype=jnp.uint32)])

  leaves = jax.tree_util.tree_leaves_with_path(params)
  values = jax.device_get(jax.jit(lambda xs: [sums(x) for x in xs])([x for _, x in leaves]))
  h = hashlib.sha256()
  for (path, leaf), v in zip(leaves, values):
    h.update(f'{jax.tree_util.keystr(path)}{tuple(leaf.shape)}'.encode())
    h.update(np.asarray(v, np.uint32).tobytes())
  return h.hexdigest()


_DATA_KEYS = ('source', 'path', 'name', 'split', 'data_dir', 'image_key', 'label_key', 'image_size')
_DATA_KEYS += ('labels_from_subdirs', 'caption_key', 'random_flip')


def cache_stamp(config, fingerprint: str, captions: bool) -> dict:
  """What a disk cache is made from: a cache is used only where this is the same."""
  d = config.data
  data = {k: d[k] for k in _DATA_KEYS}
  data['path'] = storage.resolve(d.path) if d.path else ''
  first_stage = json.loads(json.dumps(config.first_stage.to_dict(), default=list))
  first_stage.pop('checkpoint', None)  # where the weights live; the fingerprint says what they are
  return {
    'format': CACHE_FORMAT,
    'first_stage': first_stage,
    'first_stage_params': fingerprint,
    'data': data,
    'captions': bool(captions),
  }


def _differences(a: dict, b: dict, prefix='') -> list[str]:
  out = []
  for k in sorted(set(a) | set(b)):
    x, y = a.get(k), b.get(k)
    if isinstance(x, dict) and isinstance(y, dict):
      out += _differences(x, y, f'{prefix}{k}.')
    elif x != y:
      out.append(f'{prefix}{k}: cache {x!r}, now {y!r}')
  return out


def _chunk_name(k: int) -> str:
  return f'chunk-{k:06d}'


class _Range:
  """Examples [start, stop) of a source, renumbered from 0."""

  def __init__(self, source, start, stop):
    self.source, self.start, self.stop = source, start, stop

  def __len__(self):
    return self.stop - self.start

  def load(self, index, flip=False):
    return self.source.load(self.start + index, flip)


def build_disk_cache(
  out: str,
  source,
  encode_fn,
  batch_size: int,
  stamp: dict,
  process_index: int = 0,
  process_count: int = 1,
  chunk: int = CHUNK,
) -> list[int]:
  """Encodes this process's chunks that are not complete yet into ``out``; returns the chunks it
  wrote. Refuses a folder that holds a cache made from something else."""
  n = len(source)
  stamp = {**stamp, 'count': n, 'chunk': chunk}
  claim_folder(out, stamp, 'latent cache')
  flips = stamp['data']['random_flip']
  written = []
  for k in range(process_index, -(-n // chunk), process_count):
    name = storage.join(out, _chunk_name(k))
    if storage.exists(name + '.json'):
      continue
    part = _Range(source, k * chunk, min(n, (k + 1) * chunk))
    cache = encode_dataset(part, encode_fn, batch_size, flips)
    latents = np.ascontiguousarray(np.moveaxis(cache.latents[: 1 + flips], 0, 1), np.float32)
    buf = io.BytesIO()
    np.save(buf, latents)
    storage.write_bytes(name + '.npy', buf.getvalue())
    meta = {'labels': cache.labels.tolist(), 'bad': sorted(cache.bad), 'captions': cache.captions}
    storage.write_text(name + '.json', json.dumps(meta))
    written.append(k)
  return written


class DiskLatentCache:
  """A disk cache, read by index (``load(index, flip)`` -> {'moments', 'label'[, 'caption']}): each
  read fetches one example's bytes (a ranged read in a bucket). ``expected``: the stamp of the
  current run (``cache_stamp``); a cache made from anything else is refused, naming what differs.
  Picklable: grain's worker processes open their own files."""

  key = 'moments'

  def __init__(self, path: str, expected: dict | None = None):
    self.path = path
    self.stamp, metas = open_chunks(path, expected, LATENT)
    chunk = self.stamp['chunk']
    self.labels = np.concatenate([np.asarray(m['labels'], np.int32) for m in metas])
    self.bad = {k * chunk + i for k, m in enumerate(metas) for i in m['bad']}
    caps = [m['captions'] for m in metas]
    self.captions = [c for part in caps for c in part] if all(c is not None for c in caps) else None
    self.flips = 2 if self.stamp['data']['random_flip'] else 1
    self._files = storage.OpenFiles(8)
    self._headers: dict = {}

  def __len__(self):
    return int(self.stamp['count'])

  def _header(self, name: str):
    """(data offset, example shape, dtype) of a chunk's .npy file."""
    if name not in self._headers:
      f = io.BytesIO(self._files.read(name, 0, 4096))
      version = np.lib.format.read_magic(f)
      read = np.lib.format.read_array_header_1_0
      shape, _, dtype = (read if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
      self._headers[name] = (f.tell(), shape[2:], np.dtype(dtype))
    return self._headers[name]

  def load(self, index: int, flip: bool = False) -> dict:
    if index in self.bad:
      raise CorruptImage(f'image {index} was unreadable when the cache was built')
    k, i = divmod(index, self.stamp['chunk'])
    name = storage.join(self.path, _chunk_name(k) + '.npy')
    offset, shape, dtype = self._header(name)
    row = int(np.prod(shape)) * dtype.itemsize
    at = offset + (i * self.flips + (int(flip) if self.flips == 2 else 0)) * row
    moments = np.frombuffer(self._files.read(name, at, row), dtype).reshape(shape)
    example = {'moments': moments, 'label': int(self.labels[index])}
    if self.captions is not None:
      example['caption'] = self.captions[index]
    return example


@dataclasses.dataclass(frozen=True)
class CacheKind:
  """What the messages about a kind of chunked cache folder say."""

  name: str  # 'latent cache'
  key: str  # the config key that names it
  command: str  # the command that builds it
  made_from: str  # what a stamp records, for 'was made from <...> than this run uses'
  without: str  # how to train without it


LATENT = CacheKind(
  'latent cache',
  'config.data.latent_cache',
  'python -m ldm_jax.cache_latents',
  'another first stage or other data',
  "train from images (latent_cache='')",
)


def claim_folder(out: str, stamp: dict, what: str) -> None:
  """Write ``stamp`` into a new cache folder ``out``, or check that the one there is the same."""
  stamp_path = storage.join(out, 'stamp.json')
  if storage.exists(stamp_path):
    diffs = _differences(json.loads(storage.read_text(stamp_path)), stamp)
    if diffs:
      raise DataError(
        f'{out} holds a {what} of something else:\n  ' + '\n  '.join(diffs) + '\n'
        'Give another --out (or delete that folder).'
      )
  else:
    storage.write_text(stamp_path, json.dumps(stamp, indent=1))


def open_chunks(path: str, expected: dict | None, kind: CacheKind) -> tuple[dict, list]:
  """(stamp, each chunk's metadata) of a complete cache folder; refused, naming what differs,
  where its stamp is not ``expected`` (count and chunk size aside)."""
  stamp_path = storage.join(path, 'stamp.json')
  if not storage.exists(stamp_path):
    raise DataError(
      f'{kind.key}={path!r} holds no {kind.name} (no stamp.json); build it with '
      f'`{kind.command} --config=CONFIG --out=DIR`'
    )
  stamp = json.loads(storage.read_text(stamp_path))
  if expected is not None:
    diffs = [d for d in _differences(stamp, expected) if not d.startswith(('count:', 'chunk:'))]
    if diffs:
      raise DataError(
        f'the {kind.name} {path} was made from {kind.made_from} than this run uses:\n  '
        + '\n  '.join(diffs)
        + f'\nBuild one for this config with `{kind.command}`, or {kind.without}.'
      )
  n, chunk = stamp['count'], stamp['chunk']
  names = [storage.join(path, _chunk_name(k)) for k in range(-(-n // chunk))]
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    metas = list(pool.map(_read_meta, names))
  missing = [nm for nm, m in zip(names, metas) if m is None]
  if missing:
    raise DataError(
      f'the {kind.name} {path} is incomplete ({len(missing)} of {len(names)} chunks missing, '
      f'e.g. {missing[0]}.npy): run `{kind.command}` again with the same config and --out to '
      'finish it'
    )
  return stamp, metas


def _read_meta(name: str):
  return json.loads(storage.read_text(name + '.json')) if storage.exists(name + '.json') else None
