"""Batches for one process. The data position is the number of examples the whole job has
consumed; for random-access sources the global batch at position q is the slice [q, q+B) of a
per-epoch permutation seeded by (seed, epoch), and process p takes its contiguous part of it:
batches depend only on (seed, position), so a resumed run (the position is stored in each
checkpoint) sees exactly the batches it would have seen, even with another batch size. Unreadable images are skipped (replaced by the next image of the same
permutation), logged once and counted. For conditional tasks the trainer passes the task
(``ldm_jax.tasks``: its ``annotations`` and ``training_condition``), and batches add their raw
condition under 'cond'; the data layer itself knows no task."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Iterator

import numpy as np

from ldm_jax.data.prefetch import Prefetch
from ldm_jax.data.sources import CorruptImage, DataError, DigitsSource, FolderSource
from ldm_jax.images import to_model_range

log = logging.getLogger(__name__)


class PermutedExamples:
  """Global position -> example of a random-access source: position q is the ``q mod N``-th index
  of the permutation seeded by (seed, q // N), flipped by a coin seeded by (seed, q); an
  unreadable image is replaced by the next readable one of the same permutation. Calls return
  (example, indices found unreadable). Picklable: grain's worker processes run it."""

  def __init__(self, source, seed: int, random_flip: bool):
    self.source, self.seed, self.random_flip = source, seed, random_flip
    self.bad: set[int] = set()
    self._perms: dict[int, np.ndarray] = {}

  def __getstate__(self):
    return {**self.__dict__, '_perms': {}}

  def perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.source))}
    return self._perms[epoch]

  def __call__(self, pos: int):
    n, found = len(self.source), []
    perm = self.perm(pos // n)
    for j in range(n):
      index = int(perm[(pos + j) % n])
      if index in self.bad:
        continue
      flip = self.random_flip and np.random.default_rng([self.seed, 1, pos]).random() < 0.5
      try:
        return self.source.load(index, flip), found
      except CorruptImage as e:
        self.bad.add(index)
        found.append(index)
        log.warning('skipping unreadable image (%d so far): %s', len(self.bad), e)
    raise DataError(f'none of the {n} images could be read ({len(self.bad)} unreadable)')


class _LoadBatch:
  """Batch k (from the first) -> (positions, examples, unreadable indices): run by grain workers."""

  def __init__(self, examples, first: int, step: int, layout: tuple):
    self.examples, self.first, self.step, self.layout = examples, first, step, layout

  def __call__(self, k: int):
    positions = _positions(self.first + int(k) * self.step, *self.layout)
    loaded = [self.examples(p) for p in positions]
    return positions, [e for e, _ in loaded], [i for _, bad in loaded for i in bad]


def _positions(position, local, offset, process_count, local_positions) -> list[int]:
  if local_positions:  # each process has its own stream, of which it has consumed position / P
    start = position // process_count
  else:
    start = position + offset
  return list(range(start, start + local))


@dataclasses.dataclass(frozen=True)
class Decoding:
  """How examples are decoded: ``num_threads`` threads, or ``num_workers`` grain worker processes
  when > 0; ``random_flip``: horizontal flips (seeded by position)."""

  num_threads: int = 8
  num_workers: int = 0
  random_flip: bool = True


class RandomAccessBatches:
  """This process's batches of the job's example stream, from a random-access source
  (``PermutedExamples``) or a stream that maps positions to examples itself (``examples``, e.g.
  caption shards, with ``local_positions``: each process numbers its own stream). Examples are
  decoded by ``num_threads`` threads, or by ``num_workers`` grain worker processes when > 0."""

  def __init__(
    self,
    source,
    global_batch: int,
    seed: int,
    *,
    start_position: int = 0,
    process: tuple[int, int] = (0, 1),
    decoding: Decoding = Decoding(),
    conditions=None,
    examples=None,
  ):
    """``start_position``: examples of the job's stream already consumed (the checkpoint's data
    position); ``process``: (this process's index, the process count)."""
    process_index, process_count = process
    if global_batch % process_count:
      raise DataError(f'global batch {global_batch} is not divisible by {process_count} processes')
    self.source, self.global_batch, self.seed = source, global_batch, seed
    self.local, self.process_count = global_batch // process_count, process_count
    self.offset = process_index * self.local
    self.position = start_position
    self.conditions = conditions
    self.examples = examples or PermutedExamples(source, seed, decoding.random_flip)
    self.local_positions = getattr(self.examples, 'local_positions', False)
    self.bad: set[int] = set()
    self.num_workers = decoding.num_workers
    self._pool = concurrent.futures.ThreadPoolExecutor(max(1, decoding.num_threads))
    self._grain = None

  @property
  def num_corrupt(self) -> int:
    """Unreadable images skipped so far (and, with data.buckets, those the size scan found)."""
    return len(self.bad) + getattr(self.examples, 'num_unreadable', 0)

  def _perm(self, epoch: int) -> np.ndarray:
    return self.examples.perm(epoch)

  def positions(self, position: int) -> list[int]:
    """The stream positions of this process's part of the global batch at ``position``."""
    return _positions(position, *self._layout)

  @property
  def _layout(self):
    return (self.local, self.offset, self.process_count, self.local_positions)

  def batch_for_step(self, step: int) -> dict:
    return self.batch_at(step * self.global_batch)

  def batch_at(self, position: int) -> dict:
    """This process's part of the global batch of examples [position, position + B)."""
    positions = self.positions(position)
    loaded = list(self._pool.map(self.examples, positions))
    bad = [i for _, found in loaded for i in found]
    return self._assemble(positions, [e for e, _ in loaded], bad)

  def _assemble(self, positions, examples, bad) -> dict:
    self.bad.update(bad)
    key = self.source.key
    arrays = np.stack([e[key] for e in examples])
    batch = {
      key: to_model_range(arrays) if key == 'image' else arrays,
      'label': np.array([e['label'] for e in examples], np.int32),
    }
    for k in ('original_size', 'crop_top_left'):  # data.buckets: SDXL's size conditioning
      if k in examples[0]:
        batch[k] = np.array([e[k] for e in examples], np.int32)
    if 'loss_weight' in examples[0]:  # config.dreambooth: instance and prior examples
      batch['loss_weight'] = np.array([e['loss_weight'] for e in examples], np.float32)
    if self.conditions is not None:
      batch['cond'] = self.conditions.training_condition(examples, positions)
    return batch

  def _grain_iterator(self):
    """Batches from ``self.position`` on, decoded by grain worker processes: worker w of W loads
    every W-th batch, in order. Starting at any position costs the same (no replay)."""
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; a notebook has parsed none
      flags.FLAGS.mark_as_parsed()
    load = _LoadBatch(self.examples, self.position, self.global_batch, self._layout)
    # One element is a whole batch: each worker decodes one at a time (no read-ahead threads,
    # whose default buffer of 500 batches would hold gigabytes per worker).
    read = grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)
    ds = grain.MapDataset.range(0, 2**62).map(load).to_iter_dataset(read)
    options = grain.MultiprocessingOptions(num_workers=self.num_workers, per_worker_buffer_size=2)
    return iter(ds.mp_prefetch(options))

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.num_workers > 0:
      if self._grain is None:
        self._grain = self._grain_iterator()
      batch = self._assemble(*next(self._grain))
    else:
      batch = self.batch_at(self.position)
    self.position += self.global_batch
    return batch

  def close(self):
    if self._grain is not None:
      self._grain.close()
      self._grain = None
    self._pool.shutdown(wait=False)


def make_source(data_cfg, annotations=()):
  """The random-access source of config.data; ``annotations`` (caption, boxes, segmentation): what
  each example must carry besides image and label."""
  if data_cfg.source == 'digits':
    return DigitsSource(data_cfg.image_size, data_cfg.split)
  if data_cfg.source == 'folder':
    return FolderSource(
      data_cfg.path,
      data_cfg.image_size,
      data_cfg.labels_from_subdirs,
      annotations,
      data_cfg.segmentation_dir,
    )
  if data_cfg.source == 'jsonl':
    from ldm_jax.data.sources import JsonlSource

    return JsonlSource(data_cfg.path, data_cfg.image_size, annotations)
  if data_cfg.source == 'records':
    from ldm_jax.data.records import RecordsSource

    return RecordsSource(data_cfg.path, data_cfg.image_size, annotations)
  if data_cfg.source == 'shards':  # in file order (evaluation, the conditions of sample grids)
    from ldm_jax.data.shards import ShardStream

    return ShardStream(data_cfg.path, data_cfg.image_size, 0, annotations=annotations)
  if data_cfg.source == 'tfds' and random_access(data_cfg):
    from ldm_jax.data.tfds_source import TfdsSource

    return TfdsSource(data_cfg, annotations)
  raise DataError(f'{data_cfg.source!r} is not a random-access source')


def random_access(data_cfg) -> bool:
  """Whether config.data can be read by index (digits, folders, packed records, TFDS splits prepared
  as ArrayRecord; tar shards in file order) rather than streamed through tf.data (TFDS as
  TFRecord). Training reads tar shards as per-process streams (ldm_jax/data/shards.py)."""
  if data_cfg.source == 'tfds':
    from ldm_jax.data.tfds_source import tfds_random_access

    return tfds_random_access(data_cfg)
  return data_cfg.source in ('digits', 'folder', 'jsonl', 'records', 'shards')


def make_train_iterator(
  config,
  *,
  task=None,
  start_step: int = 0,
  process: tuple[int, int] = (0, 1),
  prefetch: int = 2,
  source=None,
  start_position: int | None = None,
  text_cache=None,
):
  """Iterator of per-process batches {'image': float32 [b, H, W, 3] in [-1, 1], 'label': int32 [b]}
  ({'moments': ...} instead of 'image' when ``source`` is a latent cache), plus 'cond' (the raw
  condition, ``task.training_condition``) when a conditional ``task`` is given. It starts at
  ``start_position`` examples into the job's stream (default: ``start_step`` global batches);
  ``process``: (this process's index, the process count). ``text_cache``: a
  data.text_cache.TextCache whose contexts the examples carry."""
  d, global_batch = config.data, config.training.batch_size
  position = start_step * global_batch if start_position is None else start_position
  conditions = task if task is not None and task.has_condition else None
  if d.source == 'tfds' and source is None and not random_access(d):
    from ldm_jax.data.tfds_source import tfds_batches

    if text_cache is not None:
      raise DataError(
        'config.data.text_cache is read by example index: prepare the TFDS dataset as '
        "array_record (random access) or train without it (text_cache='')"
      )
    return tfds_batches(config, global_batch, config.seed, position, *process, conditions)
  source, examples = _source_and_examples(config, source, conditions, process, text_cache)
  if examples is None and d.get('buckets'):
    from ldm_jax.data.buckets import bucketed_examples

    examples = bucketed_examples(source, d, global_batch, config.seed)
    if position % global_batch:  # another batch size than before: start at a whole batch
      position += global_batch - position % global_batch
  workers = 0 if getattr(source, 'in_memory', False) else d.num_workers
  it = RandomAccessBatches(
    source,
    global_batch,
    config.seed,
    start_position=position,
    process=process,
    decoding=Decoding(d.num_threads, workers, d.random_flip),
    conditions=conditions,
    examples=examples,
  )
  return Prefetch(it, prefetch) if prefetch else it


def _source_and_examples(config, source, conditions, process, text_cache):
  """(the source, the stream that maps positions to examples itself or None): tar shards are
  per-process streams; the examples of a ``text_cache`` carry their captions' contexts."""
  d, annotations = config.data, conditions.annotations if conditions else ()
  if d.source == 'shards' and source is None:
    from ldm_jax.data.shards import ShardStream

    stream = ShardStream(
      d.path, d.image_size, config.seed, d.random_flip, *process, annotations, d.shuffle_window
    )
    return stream, stream
  if source is None and config.get('dreambooth') and config.dreambooth.instance_prompt:
    from ldm_jax.data.dreambooth import dreambooth_source

    folder = lambda path: FolderSource(path, d.image_size, False, (), '')
    source = dreambooth_source(config, folder)
  if source is None:
    source = make_source(d, annotations)
  if text_cache is not None:
    from ldm_jax.data.text_cache import TextCachedSource

    source = TextCachedSource(source, text_cache)
  return source, None


def eval_batches(
  data_cfg, batch_size: int, max_images: int = 0, uint8: bool = False
) -> Iterator[dict]:
  """Held-out evaluation batches in a fixed order, no flips: the first ``max_images`` images (all
  when 0) of config.data's source and split, in [-1, 1] (``uint8``: as decoded, 0..255). The
  last batch may be smaller."""
  if not random_access(data_cfg):
    from ldm_jax.data.tfds_source import tfds_eval_batches

    yield from tfds_eval_batches(data_cfg, batch_size, max_images, as_uint8=uint8)
    return
  source = make_source(data_cfg)
  n = len(source) if max_images <= 0 else min(max_images, len(source))
  skipped = 0
  for start in range(0, n, batch_size):
    images, labels = [], []
    for i in range(start, min(start + batch_size, n)):
      try:
        example = source.load(i, False)
      except CorruptImage as e:
        skipped += 1
        log.warning('skipping unreadable image (%d so far): %s', skipped, e)
        continue
      images.append(example['image'])
      labels.append(example['label'])
    if images:
      images = np.stack(images)
      yield {
        'image': images if uint8 else to_model_range(images),
        'label': np.array(labels, np.int32),
      }


def iter_condition_examples(data_cfg, annotations, num: int, chunk: int):
  """The first ``num`` readable examples of config.data (file order, no flips) in lists of
  ``chunk`` (the last may be shorter), streamed: evaluation protocols read 30k examples."""
  d, done = data_cfg, 0
  if d.source == 'tfds' and not random_access(d):
    from ldm_jax.data.tfds_source import tfds_eval_batches

    for examples in tfds_eval_batches(d, chunk, num, annotations, as_examples=True):
      yield examples
    return
  source, examples = make_source(d, annotations), []
  for i in range(len(source)):
    if done + len(examples) == num:
      break
    try:
      examples.append(source.load(i, False))
    except CorruptImage:
      continue
    if len(examples) == chunk:
      yield examples
      done, examples = done + chunk, []
  if examples:
    yield examples


def condition_examples(data_cfg, task, num: int) -> dict:
  """The first ``num`` readable examples of config.data (file order, no flips) with their raw
  conditions (``task.training_condition``): {'image': [num, S, S, 3] in [-1, 1], 'cond'}. The
  same on every process (training grids show samples for these conditions next to the
  originals; FID during training uses the data's conditions)."""
  examples = [
    e for part in iter_condition_examples(data_cfg, task.annotations, num, num) for e in part
  ]
  if len(examples) < num:
    raise DataError(f'the data has only {len(examples)} readable examples; {num} are needed')
  cond = task.training_condition(examples, list(range(num)))
  return {'image': to_model_range(np.stack([e['image'] for e in examples])), 'cond': cond}
