"""Cached text-encoder outputs (``config.data.text_cache=DIR``): for a frozen text encoder, every
caption of every example encoded once by ``python -m ldm_jax.cache_text``, so that a fine-tune
reads the cross-attention context instead of running the encoder (with a latent cache too, the
step runs the UNet alone: the MLPerf Stable Diffusion setting).

A cache holds ``stamp.json`` (the encoder's settings, a fingerprint of its weights and of the
tokenizer's vocabulary, and the data: a cache is used only where all are the same; what differs is
named), ``null.npy`` (the empty prompt's context: condition dropout's null) and chunks of ``CHUNK``
consecutive examples: ``chunk-KKKKKK.npy`` (float32 [M, L, D], the contexts of the chunk's
captions in order) and then ``chunk-KKKKKK.json`` (``offsets``: example i's captions are rows
offsets[i]..offsets[i+1]; ``bad``: unreadable examples), whose presence marks the chunk complete.
Process p of P builds chunks p, p + P, ...; a rerun skips complete chunks. Training draws an
example's caption exactly as from text (``TextToImage.caption_index``), so a run with the cache
trains on the contexts the encoder would compute in the step."""

from __future__ import annotations

import hashlib
import io
import json
import logging

import numpy as np

from ldm_jax import storage
from ldm_jax.data.latent_cache import CacheKind, _chunk_name, claim_folder, open_chunks
from ldm_jax.data.sources import CorruptImage, DataError
from ldm_jax.runtime import progress

log = logging.getLogger(__name__)

TEXT_FORMAT = 'ldm_jax.text_cache/1'
CHUNK = 1024
TEXT = CacheKind(
  'text cache',
  'config.data.text_cache',
  'python -m ldm_jax.cache_text',
  'another text encoder, tokenizer or other data',
  "train without it (text_cache='')",
)
_DATA_KEYS = ('source', 'path', 'name', 'split', 'data_dir', 'caption_key', 'labels_from_subdirs')


def tokenizer_fingerprint(tokenizer) -> str:
  """sha256 of the tokenizer's vocabulary (token -> id, sorted; a CLIP tokenizer: its backend's)
  and of its padding id."""
  vocab_of = tokenizer if hasattr(tokenizer, 'get_vocab') else tokenizer.backend
  vocab = sorted(vocab_of.get_vocab().items())
  pad = getattr(tokenizer, 'pad_token_id', None)
  return hashlib.sha256(json.dumps([vocab, pad]).encode()).hexdigest()


def text_stamp(config, params_fingerprint: str, tokenizer) -> dict:
  """What a text cache is made from: the encoder (settings, weights), the tokenizer, the data."""
  d = config.data
  data = {k: d[k] for k in _DATA_KEYS}
  data['path'] = storage.resolve(d.path) if d.path else ''
  encoder = json.loads(json.dumps(config.cond_stage.to_dict(), default=list))
  for k in ('trainable', 'p_uncond'):  # how it is trained, not what it computes
    encoder.pop(k, None)
  return {
    'format': TEXT_FORMAT,
    'cond_stage': encoder,
    'cond_stage_params': params_fingerprint,
    'tokenizer': (
      tokenizer_fingerprint(tokenizer)
      if not isinstance(tokenizer, tuple)
      else [tokenizer_fingerprint(t) for t in tokenizer]  # SDXL: one per encoder
    ),
    'data': data,
  }


def _captions(source, index: int):
  """The example's captions (a list), or None when it cannot be read."""
  captions = getattr(source, 'captions', None)
  if isinstance(captions, list) and captions[index] is not None:
    caps = captions[index]
  else:
    try:
      caps = source.load(index)['caption']
    except CorruptImage:
      return None
  return [caps] if isinstance(caps, str) else list(caps)


def _encode_chunk(source, start: int, stop: int, encode, batch_size: int):
  """(contexts [M, L, D] float32, offsets [n + 1], unreadable indices) of examples [start, stop)."""
  texts, offsets, bad = [], [0], []
  for i in range(start, stop):
    caps = _captions(source, i)
    if caps is None:
      bad.append(i - start)
      caps = []
    texts += caps
    offsets.append(len(texts))
  parts = [encode(texts[j : j + batch_size]) for j in range(0, len(texts), batch_size)]
  return np.concatenate(parts) if parts else None, offsets, bad


def build_text_cache(out, source, encode, batch_size, stamp, process=(0, 1), chunk=CHUNK):
  """Encodes this process's incomplete chunks into ``out`` (``encode``: captions -> float32
  contexts [n, L, D]); returns the chunks written. Refuses a folder that holds a cache made from
  something else."""
  n = len(source)
  stamp = {**stamp, 'count': n, 'chunk': chunk}
  claim_folder(out, stamp, 'text cache')
  if process[0] == 0:
    _write_npy(storage.join(out, 'null.npy'), encode([''])[0])
  mine = list(range(process[0], -(-n // chunk), process[1]))
  written = []
  for k in progress(mine, len(mine), 'text cache', unit='chunk', size=lambda _: 1):
    name = storage.join(out, _chunk_name(k))
    if storage.exists(name + '.json'):
      continue
    contexts, offsets, bad = _encode_chunk(
      source, k * chunk, min(n, (k + 1) * chunk), encode, batch_size
    )
    if contexts is not None:
      _write_npy(name + '.npy', contexts)
    storage.write_text(name + '.json', json.dumps({'offsets': offsets, 'bad': bad}))
    written.append(k)
  return written


def _write_npy(path, array) -> None:
  buf = io.BytesIO()
  np.save(buf, np.ascontiguousarray(array, np.float32))
  storage.write_bytes(path, buf.getvalue())


def null_context(config, shape) -> np.ndarray:
  """The empty prompt's entry from config.data.text_cache; zeros of ``shape`` (the task's
  ``cache_row_shape``) where the cache is not there (``python -m ldm_jax.aot`` compiles the step
  without data; training refuses a missing cache when it opens it for the batches)."""
  path = storage.join(config.data.text_cache, 'null.npy')
  if storage.exists(path):
    return storage.load_npy(path)
  return np.zeros(shape, np.float32)


class TextCache:
  """A text cache, read by example (``contexts(index)`` -> float32 [captions, L, D], one ranged
  read). ``expected``: the current run's stamp (``text_stamp``); a cache made from anything else
  is refused, naming what differs. Picklable: grain's worker processes open their own files."""

  def __init__(self, path: str, expected: dict | None = None):
    self.path = path
    self.stamp, metas = open_chunks(path, expected, TEXT)
    chunk = self.stamp['chunk']
    self.offsets = [m['offsets'] for m in metas]
    self.bad = {k * chunk + i for k, m in enumerate(metas) for i in m['bad']}
    self.null = storage.load_npy(storage.join(path, 'null.npy'))
    self._files = storage.OpenFiles(8)
    self._offsets: dict = {}

  def __len__(self):
    return int(self.stamp['count'])

  def contexts(self, index: int) -> np.ndarray:
    if index in self.bad:
      raise CorruptImage(f'example {index} was unreadable when the text cache was built')
    k, i = divmod(index, self.stamp['chunk'])
    start, stop = self.offsets[k][i], self.offsets[k][i + 1]
    name = storage.join(self.path, _chunk_name(k) + '.npy')
    offset, row = self._row(name)
    data = self._files.read(name, offset + start * row, (stop - start) * row)
    return np.frombuffer(data, np.float32).reshape(stop - start, *self.null.shape)

  def _row(self, name):
    """(data offset, bytes per row) of a chunk's .npy file (all chunks share the row shape)."""
    if name not in self._offsets:
      f = io.BytesIO(self._files.read(name, 0, 4096))
      version = np.lib.format.read_magic(f)
      fmt = np.lib.format
      (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
      self._offsets[name] = f.tell()
    return self._offsets[name], int(np.prod(self.null.shape)) * 4


class TextCachedSource:
  """A source whose examples also carry ``text_context`` (float32 [captions, L, D]: the cached
  context of each of their captions, in order)."""

  def __init__(self, source, cache: TextCache):
    if len(source) != len(cache):
      raise DataError(
        f'the text cache {cache.path} has {len(cache)} examples, the data {len(source)}: '
        'build it from this data'
      )
    self.source, self.cache = source, cache

  def __len__(self):
    return len(self.source)

  def __getattr__(self, name):  # key, open_image, in_memory, ...: the source's
    if name in ('source', 'cache'):
      raise AttributeError(name)
    return getattr(self.source, name)

  def load(self, index: int, flip: bool = False, **kw) -> dict:
    example = self.source.load(index, flip, **kw)
    example['text_context'] = self.cache.contexts(index)
    return example
