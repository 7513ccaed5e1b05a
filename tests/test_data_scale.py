"""Data at scale: grain worker processes, resume at a large position without replay, packed
ArrayRecord datasets, tar caption shards (corrupt members), the on-disk latent cache (interrupted
and resumed builds, mismatched caches refused), two processes reading disjoint examples."""

import io
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data import DataError, RandomAccessBatches
from ldm_jax.data.latent_cache import DiskLatentCache, build_disk_cache
from ldm_jax.data.pipeline import Decoding
from ldm_jax.data.sources import DigitsSource, FolderSource

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _same(a: dict, b: dict):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_grain_workers_give_the_threads_batches_and_resume_at_38m_costs_what_starting_does():
  src = DigitsSource(16)
  t0 = time.perf_counter()
  next(RandomAccessBatches(src, 32, seed=3, start_position=0))
  start = time.perf_counter() - t0
  t0 = time.perf_counter()
  far = RandomAccessBatches(src, 32, seed=3, start_position=38_000_000)  # churches at step 400k
  first = next(far)
  resume = time.perf_counter() - t0
  assert resume < 10 * start + 1.0, (start, resume)  # no replay: the same order of cost
  # The batch at 38M is the permutation of epoch 38M // N, as an uninterrupted run would read it.
  n = len(src)
  perm = np.random.default_rng([3, 38_000_000 // n]).permutation(n)
  want = src.labels[[perm[(38_000_000 + j) % n] for j in range(32)]]
  np.testing.assert_array_equal(first['label'], want)
  # Worker processes decode the same batches, in order.
  workers = RandomAccessBatches(
    src, 32, seed=3, start_position=38_000_000, decoding=Decoding(num_workers=2)
  )
  try:
    _same(next(workers), first)
    _same(next(workers), next(far))
  finally:
    workers.close()


def _write_folder(root, n=10, corrupt=True):
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    img = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
    Image.fromarray(img).save(os.path.join(root, f'im{i:02d}.{["png", "jpg"][i % 2]}'))
    open(os.path.join(root, f'im{i:02d}.txt'), 'w').write(f'caption {i}\nother {i}\n')
    boxes = [{'class': i % 5, 'bbox': [0.1, 0.2, 0.5, 0.4]}]
    open(os.path.join(root, f'im{i:02d}.json'), 'w').write(json.dumps(boxes))
  if corrupt:
    open(os.path.join(root, 'zz.png'), 'wb').write(b'\x89PNG\r\n\x1a\n not really a png')
    open(os.path.join(root, 'zz.txt'), 'w').write('broken\n')
    open(os.path.join(root, 'zz.json'), 'w').write('[]')


def test_packing_round_trip_equals_the_folder(tmp_path):
  from ldm_jax.data.pack import pack_folder
  from ldm_jax.data.records import RecordsSource

  _write_folder(str(tmp_path / 'img'))
  r = subprocess.run(
    [sys.executable, '-m', 'ldm_jax.data.pack', f'--path={tmp_path / "img"}'],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert r.returncode == 2 and 'error: ' in r.stderr and 'out' in r.stderr  # a required flag
  info = pack_folder(str(tmp_path / 'img'), str(tmp_path / 'packed'), shard_size=4)
  assert info['count'] == 11 and len(info['shards']) == 3
  assert info['annotations'] == ['caption', 'boxes']
  annotations = ('caption', 'boxes')
  folder = FolderSource(str(tmp_path / 'img'), 16, annotations=annotations)
  packed = RecordsSource(str(tmp_path / 'packed'), 16, annotations)
  assert len(packed) == len(folder)
  for i in range(len(folder) - 1):
    for flip in (False, True):
      a, b = folder.load(i, flip), packed.load(i, flip)
      _same({k: a[k] for k in ('image', 'label')}, {k: b[k] for k in ('image', 'label')})
      assert a['caption'] == b['caption'] and a['boxes'] == b['boxes']
  # The corrupt file is packed as it was, and skipped and counted at training time alike.
  a = RandomAccessBatches(folder, 8, seed=0)
  b = RandomAccessBatches(packed, 8, seed=0, decoding=Decoding(num_workers=2))
  try:
    for _ in range(3):
      _same(next(a), next(b))
    assert a.num_corrupt == b.num_corrupt == 1
  finally:
    b.close()
  with pytest.raises(DataError, match='segmentation'):
    RecordsSource(str(tmp_path / 'packed'), 16, ('segmentation',))
  with pytest.raises(DataError, match='ldm_jax.data.pack'):
    RecordsSource(str(tmp_path / 'img'), 16)


def test_an_image_without_its_caption_is_skipped_and_counted_when_packing_and_training(tmp_path):
  """The caption kind is inferred from the images; one image without its .txt is skipped with one
  warning and counted (packing through the command a user types, and training from the folder);
  an error only when no image has one; a task that reads no captions does not need them."""
  root = tmp_path / 'img'
  _write_folder(str(root), n=10, corrupt=False)
  os.remove(root / 'im09.txt')
  pack = [sys.executable, '-m', 'ldm_jax.data.pack', f'--path={root}']
  r = subprocess.run([*pack, f'--out={tmp_path / "p"}'], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'packed 9 examples' in r.stdout and '1 skipped' in r.stdout
  assert r.stderr.count('im09') == 1 and 'Traceback' not in r.stderr
  info = json.load(open(tmp_path / 'p' / 'info.json'))
  assert info['skipped'] == 1 and info['annotations'] == ['caption', 'boxes']
  # Training from the folder: the same image is skipped and counted, the others are read.
  folder = FolderSource(str(root), 16, annotations=('caption',))
  batches = RandomAccessBatches(folder, 10, seed=0)
  next(batches)
  assert batches.num_corrupt == 1
  assert FolderSource(str(root), 16, annotations=()).load(9)['image'].shape == (16, 16, 3)
  # No image has a caption: one error line, exit 2.
  for f in root.glob('*.txt'):
    f.unlink()
  r = subprocess.run(
    [*pack, f'--out={tmp_path / "q"}', '--annotations=caption'],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1].startswith('error: this task reads a caption')


def _jpeg(rng, h=24, w=32) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, 'JPEG')
  return buf.getvalue()


def _write_shards(root, num_shards=4, per_shard=6):
  """img2dataset's layout; shard 1 holds a truncated JPEG and a sample without caption."""
  rng = np.random.default_rng(1)
  os.makedirs(root, exist_ok=True)
  for s in range(num_shards):
    with tarfile.open(os.path.join(root, f'{s:05d}.tar'), 'w') as tar:
      for i in range(per_shard):
        key = f'{s:05d}{i:04d}'
        members = {'jpg': _jpeg(rng), 'txt': f'shard {s} sample {i}'.encode()}
        members['json'] = json.dumps({'key': key, 'caption': 'from json'}).encode()
        if s == 1 and i == 2:
          members['jpg'] = members['jpg'][:60]  # truncated
        if s == 1 and i == 4:
          del members['txt']
          members['json'] = b'{"key": "no caption"}'
        for ext, data in members.items():
          info = tarfile.TarInfo(f'{key}.{ext}')
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))


def test_caption_shards_skip_and_count_corrupt_members_and_resume_exactly(tmp_path, monkeypatch):
  from ldm_jax.data.shards import ShardStream, expand_shards

  monkeypatch.setenv('LDM_JAX_CACHE', str(tmp_path / 'cache'))
  _write_shards(str(tmp_path / 'shards'))
  spec = str(tmp_path / 'shards' / '{00000..00003}.tar')
  assert expand_shards(spec) == expand_shards(str(tmp_path / 'shards'))
  with pytest.raises(DataError, match='00008.tar'):
    expand_shards(str(tmp_path / 'shards' / '{00008..00009}.tar'))
  stream = ShardStream(spec, 16, seed=5, annotations=('caption',), shuffle_window=4)
  assert len(stream) == 24
  # One epoch: every readable sample exactly once, the two bad ones replaced by their successors.
  epoch = [stream(s) for s in range(24)]
  captions = [e['caption'][0] for e, _ in epoch]
  assert sorted(set(captions)) == sorted(
    f'shard {s} sample {i}' for s in range(4) for i in range(6) if (s, i) not in ((1, 2), (1, 4))
  )
  assert len(stream.bad) == 2 and all(e['image'].shape == (16, 16, 3) for e, _ in epoch)
  # The second epoch visits the shards in another order.
  assert [stream(24 + s)[0]['caption'] for s in range(24)] != [e['caption'] for e, _ in epoch]

  # Batches from position 40 on equal an uninterrupted run's (no replay); two processes read
  # disjoint shards.
  def it(pos):
    stream = ShardStream(spec, 16, 5, True, 0, 1, ('caption',), 4)
    return RandomAccessBatches(stream, 8, 5, start_position=pos, examples=stream)

  full = it(0)
  batches = [next(full) for _ in range(6)]
  _same(next(it(40)), batches[5])
  assert full.num_corrupt == 2
  with pytest.raises(DataError, match='4 shards for 5 processes'):
    ShardStream(spec, 16, 5, process_index=0, process_count=5)


def test_caption_shards_through_the_config_and_grain_workers(tmp_path, monkeypatch):
  from ldm_jax.data import make_train_iterator
  from ldm_jax.tasks import get_task
  from tests.helpers import tiny_task_config

  monkeypatch.setenv('LDM_JAX_CACHE', str(tmp_path / 'cache'))
  _write_shards(str(tmp_path / 'shards'))
  config = tiny_task_config('text')
  config.data.update(dict(source='shards', path=str(tmp_path / 'shards'), cache_latents=False))
  task = get_task(config)
  batches = {}
  for workers in (0, 2):
    config.data.num_workers = workers
    parts = []
    for p in range(2):
      it = make_train_iterator(config, task=task, process=(p, 2), prefetch=0)
      parts.append([next(it) for _ in range(3)])
      it.close()
    batches[workers] = parts
  for a, b in zip(batches[0], batches[2]):
    for x, y in zip(a, b):
      _same(x, y)
  assert batches[0][0][0]['cond'].shape == (4, 77)
  # Process 0 reads shards 0 and 2, process 1 shards 1 and 3: their images never coincide.
  flat = lambda part: np.concatenate([b['image'] for b in part]).reshape(12, -1)
  p0, p1 = flat(batches[0][0]), flat(batches[0][1])
  assert not any((p0[i] == p1[j]).all() for i in range(12) for j in range(12))


def _encode(images):
  """A stand-in first stage: 4x4 average pooling (moments of 6 channels) — a pure function."""
  x = np.asarray(images, np.float32)
  b, h, w, c = x.shape
  pooled = x.reshape(b, h // 4, 4, w // 4, 4, c).mean((2, 4))
  return np.concatenate([pooled, -pooled], -1)


class _Interrupting:
  def __init__(self, source, at):
    self.source, self.at = source, at

  def __len__(self):
    return len(self.source)

  def load(self, index, flip=False):
    if index == self.at:
      raise KeyboardInterrupt  # the build is killed here
    return self.source.load(index, flip)


def _files(path):
  return {n: open(os.path.join(path, n), 'rb').read() for n in sorted(os.listdir(path))}


def test_latent_cache_build_resumes_to_identical_shards_and_refuses_another_stamp(tmp_path):
  from ldm_jax.images import to_model_range

  src = DigitsSource(16)
  src.images, src.labels = src.images[:300], src.labels[:300]
  stamp = {
    'first_stage': {'kind': 'kl'},
    'first_stage_params': 'abc',
    'data': {'random_flip': True},
  }
  done = str(tmp_path / 'whole')
  assert build_disk_cache(done, src, _encode, 32, stamp, chunk=64) == [0, 1, 2, 3, 4]
  cut = str(tmp_path / 'cut')
  with pytest.raises(KeyboardInterrupt):
    build_disk_cache(cut, _Interrupting(src, 150), _encode, 32, stamp, chunk=64)
  assert build_disk_cache(cut, src, _encode, 32, stamp, chunk=64) == [2, 3, 4]
  assert _files(cut) == _files(done)
  # Two processes build disjoint chunks of the same cache.
  two = str(tmp_path / 'two')
  assert build_disk_cache(two, src, _encode, 32, stamp, 1, 2, chunk=64) == [1, 3]
  assert build_disk_cache(two, src, _encode, 32, stamp, 0, 2, chunk=64) == [0, 2, 4]
  assert _files(two) == _files(done)
  # Reads equal the encoder's output, image and mirror.
  cache = DiskLatentCache(done, stamp)
  for i in (0, 63, 64, 299):
    for flip in (False, True):
      want = _encode(to_model_range(src.load(i, flip)['image'][None]))[0]
      np.testing.assert_allclose(cache.load(i, flip)['moments'], want, rtol=1e-6)
      assert cache.load(i, flip)['label'] == src.labels[i]
  # Training batches from the cache, in worker processes too.
  a = RandomAccessBatches(cache, 16, seed=0)
  b = RandomAccessBatches(cache, 16, seed=0, start_position=16, decoding=Decoding(num_workers=2))
  try:
    next(a)
    _same(next(a), next(b))
  finally:
    b.close()
  # Another first stage, other data or an unfinished cache: refused, naming what differs.
  other = {**stamp, 'first_stage_params': 'def'}
  with pytest.raises(DataError, match='first_stage_params: cache .abc., now .def.'):
    DiskLatentCache(done, other)
  with pytest.raises(DataError, match='holds a latent cache of something else'):
    build_disk_cache(done, src, _encode, 32, other, chunk=64)
  os.remove(os.path.join(cut, 'chunk-000003.json'))
  with pytest.raises(DataError, match='incomplete .1 of 5 chunks'):
    DiskLatentCache(cut, stamp)
  with pytest.raises(DataError, match='cache_latents'):
    DiskLatentCache(str(tmp_path), stamp)


def test_params_fingerprint_ignores_sharding_and_sees_one_changed_weight():
  import jax
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from ldm_jax.data.latent_cache import params_fingerprint
  from ldm_jax.parallel import sharding

  params = {
    'a': np.arange(64, dtype=np.float32).reshape(8, 8) / 7,
    'b': {'c': np.ones(3, np.float32)},
  }
  mesh = sharding.make_mesh()
  sharded = dict(params, a=jax.device_put(params['a'], NamedSharding(mesh, P('data', None))))
  assert params_fingerprint(params) == params_fingerprint(sharded)
  changed = dict(params, a=params['a'].copy())
  changed['a'][3, 5] = np.nextafter(changed['a'][3, 5], np.float32(2))
  assert params_fingerprint(changed) != params_fingerprint(params)


READ_PART = """
import sys, numpy as np
from ldm_jax.data.pipeline import RandomAccessBatches
from ldm_jax.data.records import RecordsSource
p = int(sys.argv[1])
it = RandomAccessBatches(RecordsSource(sys.argv[2], 16), 8, 0, process=(p, 2))
np.save(sys.argv[3], np.stack([next(it)['image'] for _ in range(2)]))
"""


def test_two_processes_read_disjoint_halves_of_each_global_batch(tmp_path):
  from ldm_jax.data.pack import pack_folder

  _write_folder(str(tmp_path / 'img'), n=16, corrupt=False)
  pack_folder(str(tmp_path / 'img'), str(tmp_path / 'packed'), shard_size=5)
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        '-c',
        READ_PART,
        str(p),
        str(tmp_path / 'packed'),
        str(tmp_path / f'{p}.npy'),
      ],
      cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS='cpu'),
    )
    for p in range(2)
  ]
  assert [q.wait(timeout=120) for q in procs] == [0, 0]
  parts = [np.load(tmp_path / f'{p}.npy') for p in range(2)]
  from ldm_jax.data.records import RecordsSource

  whole = RandomAccessBatches(RecordsSource(str(tmp_path / 'packed'), 16), 8, 0)
  for step in range(2):
    got = np.concatenate([parts[0][step], parts[1][step]])
    np.testing.assert_array_equal(got, next(whole)['image'])
    flat = got.reshape(8, -1)
    assert len({row.tobytes() for row in flat}) == 8  # no example twice in a global batch


def test_tfds_prepared_as_array_record_is_read_by_index(monkeypatch):
  """A TFDS split in ArrayRecord is read with random access through the folder's preprocessing:
  the (seed, position) batches, captions and boxes (mock data; its builder reports TFRecord, so
  the file-format check is forced)."""
  tfds = pytest.importorskip('tensorflow_datasets')
  from ldm_jax.data import make_source, make_train_iterator, tfds_source
  from ldm_jax.data.tfds_source import TfdsSource
  from ldm_jax.tasks import get_task
  from tests.helpers import tiny_task_config

  config = tiny_task_config('layout')
  config.data.update(dict(source='tfds', name='coco/2017', image_size=16))
  with tfds.testing.mock_data(num_examples=24):
    assert not tfds_source.tfds_random_access(config.data)
    monkeypatch.setattr(tfds_source, 'tfds_random_access', lambda d: True)
    source = make_source(config.data, ('boxes',))
    assert isinstance(source, TfdsSource) and len(source) == 24
    example = source.load(5, True)
    assert example['image'].shape == (16, 16, 3)
    for obj in example['boxes']:
      x, y, w, h = obj['bbox']
      assert 0 <= x <= x + w <= 1 and 0 <= y <= y + h <= 1
    it = make_train_iterator(config, task=get_task(config), start_position=96, prefetch=0)
    batch = next(it)
    direct = RandomAccessBatches(
      source,
      8,
      config.seed,
      decoding=Decoding(random_flip=config.data.random_flip),
      start_position=96,
    )
    np.testing.assert_array_equal(batch['image'], direct.batch_at(96)['image'])
    assert batch['cond'].shape == (8, 92)


def test_jsonl_captions_source(tmp_path):
  """Images and captions listed one per line (MS-COCO's 30k evaluation prompts come this way):
  the folder's decoding, captions, a missing file skipped and counted, bad lines named."""
  from ldm_jax.data.sources import JsonlSource

  _write_folder(str(tmp_path / 'img'), n=4, corrupt=False)
  lines = [
    {'image': f'img/im{i:02d}.{["png", "jpg"][i % 2]}', 'caption': f'photo {i}'} for i in range(4)
  ]
  lines.append({'image': 'img/missing.jpg', 'caption': 'gone'})
  lines[1]['caption'] = ['first', 'second']
  (tmp_path / 'captions.jsonl').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
  source = JsonlSource(str(tmp_path / 'captions.jsonl'), 16, ('caption',))
  folder = FolderSource(str(tmp_path / 'img'), 16)
  assert len(source) == 5
  for i in range(4):
    np.testing.assert_array_equal(source.load(i, True)['image'], folder.load(i, True)['image'])
  assert source.load(0)['caption'] == ['photo 0'] and source.load(1)['caption'] == [
    'first',
    'second',
  ]
  it = RandomAccessBatches(source, 8, seed=0)
  next(it)
  assert it.num_corrupt == 1
  (tmp_path / 'bad.jsonl').write_text('{"caption": "no image"}\n')
  with pytest.raises(DataError, match='bad.jsonl:1'):
    JsonlSource(str(tmp_path / 'bad.jsonl'), 16)
  (tmp_path / 'nocap.jsonl').write_text('{"image": "img/im00.png"}\n')
  with pytest.raises(DataError, match='line 1 has no "caption"'):
    JsonlSource(str(tmp_path / 'nocap.jsonl'), 16, ('caption',))


def test_device_prefetch_keeps_the_order_and_raises_each_error_with_its_batch():
  """The training loop fetches one global batch ahead (its host-to-device copy overlaps the step);
  batches come in order, and a failure fetching batch k surfaces when batch k is asked for."""
  from ldm_jax.data.prefetch import DevicePrefetch

  items, calls = iter([1, 2, ValueError('bad batch 3'), 4]), []

  def fetch():
    item = next(items)
    calls.append(item)
    if isinstance(item, Exception):
      raise item
    return item

  prefetch = DevicePrefetch(fetch)
  assert prefetch() == 1 and len(calls) == 2  # batch 2 is already on its way
  assert prefetch() == 2
  with pytest.raises(ValueError, match='bad batch 3'):
    prefetch()
  assert prefetch() == 4


def test_a_truncated_shard_is_used_up_to_its_damage_and_named(tmp_path, monkeypatch, caplog):
  """A .tar shard cut short (an interrupted upload): its complete samples are used, the rest is
  skipped with a warning naming the shard; a shard damaged from its first byte adds none; the run
  starts either way."""
  from ldm_jax.data.shards import ShardStream

  monkeypatch.setenv('LDM_JAX_CACHE', str(tmp_path / 'cache'))
  _write_shards(str(tmp_path / 'shards'))
  path = tmp_path / 'shards' / '00002.tar'
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  (tmp_path / 'shards' / '00003.tar').write_bytes(b'not a tar file at all' * 10)
  with caplog.at_level('WARNING'):
    stream = ShardStream(str(tmp_path / 'shards'), 16, seed=5, annotations=('caption',))
  assert '00002.tar is damaged' in caplog.text and '00003.tar' in caplog.text
  assert 0 < stream.counts[2] < 6 and stream.counts[3] == 0 and len(stream) < 24
  captions = {stream(s)[0]['caption'][0] for s in range(len(stream))}
  assert {f'shard 2 sample {i}' for i in range(int(stream.counts[2]))} <= captions
  assert not any(c.startswith('shard 3') for c in captions)
