"""Packed datasets: examples as ArrayRecord shards with random access (``config.data.source =
'records'``, ``config.data.path = OUT``), written by ``python -m ldm_jax.data.pack``.

A packed folder holds ``info.json`` ({"format", "count", "shards", "annotations", "class_names"})
and ``data-SSSSS-of-NNNNN.array_record`` files (group size 1, for random access). Each record is
one example as msgpack: the image file's bytes as they were (decoded, cropped and flipped at
training time, exactly as from the folder), ``label``, and the annotation files' contents
(``caption`` text, ``boxes`` JSON, ``segmentation`` PNG bytes). Shards in a bucket (``gs://``)
are copied once into ``$LDM_JAX_CACHE/records`` (ArrayRecord's reader opens local files only);
for datasets larger than a disk, mount the bucket (gcsfuse) and give the mounted path."""

from __future__ import annotations

import io
import json

import msgpack

from ldm_jax import storage
from ldm_jax.data.sources import DataError, decode_example

FORMAT = 'ldm_jax.records/1'


def encode_record(raw: dict) -> bytes:
  return msgpack.packb(raw, use_bin_type=True)


def decode_record(data: bytes) -> dict:
  return msgpack.unpackb(data, raw=False)


def read_info(path: str) -> dict:
  info_path = storage.join(path, 'info.json')
  if not storage.exists(info_path):
    raise DataError(
      f'{path!r} is not a packed dataset (no info.json); write one with '
      f'`python -m ldm_jax.data.pack --source=folder --path=IMAGES --out={path}`'
    )
  info = json.loads(storage.read_text(info_path))
  if info.get('format') != FORMAT:
    raise DataError(f'{info_path}: format {info.get("format")!r}, expected {FORMAT!r}')
  return info


class RecordsSource:
  """A packed dataset: the same examples as the FolderSource it was packed from, read by index
  from the ArrayRecord shards (readers open lazily, so the source pickles cheaply into grain's
  worker processes)."""

  key = 'image'

  def __init__(self, path: str, image_size: int, annotations=()):
    self.path, self.image_size = path, image_size
    self.info = read_info(path)
    missing = [a for a in annotations if a not in self.info['annotations']]
    if missing:
      raise DataError(
        f'this task reads a {missing[0]} for every image, but the packed dataset {path!r} has '
        f'only {self.info["annotations"] or "no annotations"}; pack it again from a folder '
        'that has them'
      )
    self.annotations = tuple(annotations)
    self.class_names = self.info.get('class_names', [])
    self._source = None

  def __len__(self):
    return int(self.info['count'])

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def _records(self):
    if self._source is None:
      from array_record.python.array_record_data_source import ArrayRecordDataSource

      shards = [
        storage.local_copy(storage.join(self.path, s), 'records') for s in self.info['shards']
      ]
      self._source = ArrayRecordDataSource(shards)
    return self._source

  def raw(self, index: int) -> dict:
    return decode_record(self._records()[index])

  def open_image(self, index: int):
    return io.BytesIO(self.raw(index)['image'])

  def load(self, index: int, flip: bool = False, size=None) -> dict:
    raw = self.raw(index)
    kept = {k: raw[k] for k in ('image', 'label', *self.annotations)}
    return decode_example(
      f'{self.path}[{index}] ({raw.get("name", "")})', kept, size or self.image_size, flip
    )
