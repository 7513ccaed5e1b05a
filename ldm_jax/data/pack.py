"""Packs a folder dataset into ArrayRecord shards that training reads with random access:

  python -m ldm_jax.data.pack --source=folder --path=IMAGES --out=OUT [--labels_from_subdirs]
      [--annotations=caption,boxes,segmentation] [--segmentation_dir=DIR] [--shard_size=2000]

then train with ``--config.data.source=records --config.data.path=OUT``. Files are stored as they
are (no decoding: packing is copying), so the packed dataset yields exactly the folder's batches,
unreadable images included (skipped and counted at training time, as from the folder). The
annotations packed are those given, or by default every kind whose file exists next to the first
image. ``OUT`` may be a bucket (``gs://``): shards are written locally, then uploaded.

TFDS datasets need no packing: prepare them with ``tfds build NAME --file_format=array_record``
and ``source='tfds'`` reads them with random access (ldm_jax/data/tfds_source.py)."""

from __future__ import annotations

import json
import logging
import os
import tempfile

from ldm_jax import storage
from ldm_jax.data.records import FORMAT, encode_record
from ldm_jax.data.sources import DataError, FolderSource
from ldm_jax.runtime import progress, run_cli

ANNOTATIONS = ('caption', 'boxes', 'segmentation')
log = logging.getLogger(__name__)


def _readable(source: FolderSource) -> tuple[list, int]:
  """(the indices of the images whose annotation files can be read, the number skipped): an
  image without its caption/boxes/class map is skipped like an unreadable image, counted, and
  warned about once; none left is an error. (Image bytes are copied as they are: an undecodable
  image is packed, and skipped and counted at training time as from the folder.)"""
  keep, skipped = [], 0
  for i, f in enumerate(source.files):
    missing = [
      w
      for w in source.annotations
      if not storage.exists(source._annotation_path(f, w))  # pylint: disable=protected-access
    ]
    if missing:
      if not skipped:
        log.warning(
          'skipping %s: no %s file beside it (images without their annotations are skipped and '
          'counted; this is the first)',
          f,
          ' or '.join(missing),
        )
      skipped += 1
    else:
      keep.append(i)
  if skipped:
    log.warning('skipped %d of %d images for missing annotation files', skipped, len(source))
  if not keep:
    raise DataError(
      f'no image in {source.root!r} has all of the annotation files {list(source.annotations)}; '
      'pack with --annotations= naming those that exist (see FolderSource in '
      'ldm_jax/data/sources.py for the layout)'
    )
  return keep, skipped


def pack_folder(
  path: str,
  out: str,
  labels_from_subdirs: bool = False,
  annotations=None,
  segmentation_dir: str = '',
  shard_size: int = 2000,
) -> dict:
  """Writes OUT/info.json and the shards; returns the info."""
  from array_record.python.array_record_module import ArrayRecordWriter

  if annotations is None:
    probe = FolderSource(path, 1, labels_from_subdirs, (), segmentation_dir)
    annotations = [a for a in ANNOTATIONS if probe.present(a)]
  source = FolderSource(path, 1, labels_from_subdirs, annotations, segmentation_dir)
  examples, skipped = _readable(source)
  n = len(examples)
  num_shards = max(1, -(-n // shard_size))
  names = [f'data-{s:05d}-of-{num_shards:05d}.array_record' for s in range(num_shards)]
  storage.makedirs(out)
  with tempfile.TemporaryDirectory() as tmp:
    for s, name in enumerate(progress(names, num_shards, 'pack', unit='shard', size=lambda _: 1)):
      local = os.path.join(tmp, name) if storage.is_url(out) else storage.join(out, name)
      writer = ArrayRecordWriter(local + '.partial', 'group_size:1')
      for i in examples[s * shard_size : (s + 1) * shard_size]:
        raw = source.raw(i)
        raw['name'] = storage.relpath(source.files[i], path)
        writer.write(encode_record(raw))
      writer.close()
      if storage.is_url(out):
        storage.write_bytes(storage.join(out, name), open(local + '.partial', 'rb').read())
        os.remove(local + '.partial')
      else:
        os.replace(local + '.partial', local)
  info = {
    'format': FORMAT,
    'count': n,
    'shards': names,
    'annotations': list(annotations),
    'skipped': skipped,  # images whose annotation files are missing or unreadable: not packed
    'class_names': list(source.class_names),
    'packed_from': storage.resolve(path),
  }
  storage.write_text(storage.join(out, 'info.json'), json.dumps(info, indent=1))
  return info


def main(argv) -> None:
  from absl import flags

  a = flags.FLAGS
  del argv
  annotations = None if a.annotations is None else [x for x in a.annotations if x]
  bad = [x for x in annotations or () if x not in ANNOTATIONS]
  if bad:
    raise DataError(f'--annotations: {bad[0]!r} is not one of {", ".join(ANNOTATIONS)}')
  info = pack_folder(
    a.path, a.out, a.labels_from_subdirs, annotations, a.segmentation_dir, a.shard_size
  )
  skipped = f' ({info["skipped"]} skipped: see the warnings)' if info['skipped'] else ''
  print(f'packed {info["count"]} examples into {len(info["shards"])} shards in {a.out}{skipped}')


def run() -> None:
  from absl import flags

  flags.DEFINE_enum('source', 'folder', ['folder'], 'What to pack (TFDS: see the docstring).')
  flags.DEFINE_string('path', None, 'The image folder (local or gs://).')
  flags.DEFINE_string('out', None, 'The packed dataset folder (local or gs://).')
  flags.DEFINE_bool('labels_from_subdirs', False, 'Class label = sorted top-level subfolder.')
  flags.DEFINE_list('annotations', None, f'Of {", ".join(ANNOTATIONS)} (default: those present).')
  flags.DEFINE_string('segmentation_dir', '', 'Class maps here, as config.data.segmentation_dir.')
  flags.DEFINE_integer('shard_size', 2000, 'Examples per shard.')
  flags.mark_flags_as_required(['path', 'out'])
  run_cli(main)


if __name__ == '__main__':
  run()
