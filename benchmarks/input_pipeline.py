"""The input pipeline at scale on this machine: one JSON line per measurement.

python benchmarks/input_pipeline.py --out=benchmarks/results/input_pipeline.jsonl
python benchmarks/input_pipeline.py --what=decode,resume          # no model, a minute

decode   images/s of the training pipeline (JPEG decode, centre crop, bicubic resize to 256,
         flip, batches of 32) from a folder of LSUN-sized JPEGs (--width x --height, quality
         90, synthetic smooth content), with decoding in N threads of one process and in N grain
         worker processes, N in --workers.
resume   seconds to the first batch when starting at data positions 0, 1M and 38M (churches at
         step 400k, batch 96) of a source with churches' 126,227 entries (backed by the JPEG
         folder, entry i = file i mod files), in threads and in 2 workers.
cache    the on-disk latent cache of --config (random first-stage weights, float32): build rate
         (images/s encoded, both flips) with python -m ldm_jax.cache_latents's code path.
train    the trainer's jitted step fed by the pipeline: from images (decode + encode in the
         step) vs from the on-disk cache (read moments), --steps steps at --batch_size, img/s.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', os.path.join(ROOT, 'configs/lsun_churches.py'), 'LDM config (cache, train).'
)
flags.DEFINE_list('what', ['decode', 'resume', 'cache', 'train'], 'Measurements to run.')
flags.DEFINE_list('workers', ['1', '2', '4'], 'Threads / worker processes to time.')
flags.DEFINE_integer('files', 256, 'Distinct JPEG files written.')
flags.DEFINE_integer('width', 341, 'JPEG width (LSUN churches: 256 on the short side).')
flags.DEFINE_integer('height', 256, 'JPEG height.')
flags.DEFINE_integer('batches', 8, 'Timed batches of 32 per decode measurement.')
flags.DEFINE_integer('batch_size', 2, 'Training batch (train) and encoder batch (cache).')
flags.DEFINE_integer('cache_images', 16, 'Images encoded for the cache measurement.')
flags.DEFINE_integer('steps', 3, 'Timed training steps per variant (after one warm-up).')
flags.DEFINE_string('out', '', 'Append the JSON lines to this file.')

CHURCHES = 126_227


def write_jpegs(folder: str, n: int, width: int, height: int) -> None:
  import numpy as np
  from PIL import Image

  rng = np.random.default_rng(0)
  for i in range(n):
    small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((width, height), Image.BICUBIC)  # smooth, photo-like
    noise = rng.normal(0, 8, (height, width, 3))
    arr = np.clip(np.asarray(img, np.float32) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(os.path.join(folder, f'{i:06d}.jpg'), quality=90)


class Repeated:
  """A source of ``n`` entries backed by a smaller one (entry i = its entry i mod its length)."""

  key = 'image'

  def __init__(self, source, n):
    self.source, self.n = source, n

  def __len__(self):
    return self.n

  def load(self, index, flip=False):
    return self.source.load(index % len(self.source), flip)


def _batches(source, start, workers, threads):
  from ldm_jax.data.pipeline import Decoding, RandomAccessBatches

  return RandomAccessBatches(
    source, 32, seed=0, start_position=start, decoding=Decoding(threads, workers)
  )


def bench_decode(folder, emit):
  from ldm_jax.data.sources import FolderSource

  source = FolderSource(folder, 256)
  for n in map(int, FLAGS.workers):
    for kind in ('threads', 'workers'):
      it = _batches(source, 0, n if kind == 'workers' else 0, n if kind == 'threads' else 1)
      next(it)  # start-up (worker processes spawn)
      t0 = time.perf_counter()
      for _ in range(FLAGS.batches):
        next(it)
      sec = time.perf_counter() - t0
      it.close()
      emit(
        what='decode',
        decode_in=kind,
        count=n,
        images_per_second=round(32 * FLAGS.batches / sec, 1),
        jpeg=f'{FLAGS.width}x{FLAGS.height} q90',
        image_size=256,
      )


def bench_resume(folder, emit):
  from ldm_jax.data.sources import FolderSource

  source = Repeated(FolderSource(folder, 256), CHURCHES)
  for kind in ('threads', 'workers'):
    for position in (0, 1_000_000, 38_000_000):
      t0 = time.perf_counter()
      it = _batches(source, position, 2 if kind == 'workers' else 0, 2)
      next(it)
      sec = time.perf_counter() - t0
      it.close()
      emit(
        what='resume',
        decode_in=kind,
        count=2,
        position=position,
        seconds_to_first_batch=round(sec, 3),
        source_entries=CHURCHES,
      )


def _setup(config):
  import jax

  from benchmarks.common import random_weights
  from ldm_jax.latent_diffusion import LatentDiffusion

  config.training.batch_size = FLAGS.batch_size
  ldm = LatentDiffusion.from_config(config, config.training.compute_dtype, config.training.remat)
  params, fs_params = random_weights(config, ldm)
  return ldm, jax.device_put(params), jax.device_put(fs_params)


def bench_cache(config, folder, cache_dir, emit, setup):
  import jax
  import jax.numpy as jnp

  from ldm_jax.data.latent_cache import build_disk_cache, cache_stamp, params_fingerprint
  from ldm_jax.data.sources import FolderSource

  ldm, _, fs_params = setup
  config.data.update(dict(source='folder', path=folder, random_flip=True))
  source = FolderSource(folder, config.data.image_size)
  source.files = source.files[: FLAGS.cache_images]
  source.labels = source.labels[: FLAGS.cache_images]
  encode = jax.jit(lambda p, x: ldm.encode_moments(p, x).astype(jnp.float32))
  fn = lambda images: encode(fs_params, images)
  fn(jnp.zeros((FLAGS.batch_size, 256, 256, 3)))  # compile outside the timing
  stamp = cache_stamp(config, params_fingerprint(fs_params), False)
  t0 = time.perf_counter()
  build_disk_cache(cache_dir, source, fn, FLAGS.batch_size, stamp, chunk=1024)
  sec = time.perf_counter() - t0
  emit(
    what='cache_build',
    images_encoded=2 * FLAGS.cache_images,
    images_per_second=round(2 * FLAGS.cache_images / sec, 3),
    batch=FLAGS.batch_size,
    dtype='float32',
  )
  return stamp


def bench_train(config, folder, cache_dir, emit, setup):
  import jax
  import jax.numpy as jnp

  from ldm_jax.data.latent_cache import DiskLatentCache
  from ldm_jax.data.pipeline import Decoding, RandomAccessBatches
  from ldm_jax.data.prefetch import Prefetch
  from ldm_jax.data.sources import FolderSource
  from ldm_jax.train.ldm_step import make_ldm_step
  from ldm_jax.train.state import TrainState, make_optimizer
  from ldm_jax.train.step_common import guard_nonfinite

  ldm, params, fs_params = setup
  t = config.training
  tx = make_optimizer(config)
  step = jax.jit(guard_nonfinite(make_ldm_step(ldm, tx, config)), donate_argnums=(0,))
  sources = {
    'images': FolderSource(folder, config.data.image_size),
    'disk latent cache': DiskLatentCache(cache_dir),
  }
  for name, source in sources.items():
    data = Prefetch(RandomAccessBatches(source, FLAGS.batch_size, 0, decoding=Decoding(2)), 2)
    state = TrainState.create(jax.tree.map(jnp.copy, params), tx, t.use_ema, 1.0)
    state, m = step(state, next(data), fs_params)  # compile + warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, m = step(state, next(data), fs_params)
    jax.block_until_ready((state, m))
    sec = (time.perf_counter() - t0) / FLAGS.steps
    data.close()
    emit(
      what='train_from',
      source=name,
      batch=FLAGS.batch_size,
      dtype=t.compute_dtype,
      seconds_per_step=round(sec, 3),
      images_per_second=round(FLAGS.batch_size / sec, 4),
    )


def main(argv):
  del argv
  import jax

  lines = []
  device = jax.devices()[0]
  stamp = dict(
    date=str(datetime.date.today()),
    device=f'{device.platform} {device.device_kind}',
    cpus=os.cpu_count(),
  )

  def emit(**kw):
    line = {**stamp, **kw}
    print(json.dumps(line), flush=True)
    lines.append(line)

  with tempfile.TemporaryDirectory() as tmp:
    folder = os.path.join(tmp, 'jpegs')
    os.makedirs(folder)
    write_jpegs(folder, FLAGS.files, FLAGS.width, FLAGS.height)
    if 'decode' in FLAGS.what:
      bench_decode(folder, emit)
    if 'resume' in FLAGS.what:
      bench_resume(folder, emit)
    if {'cache', 'train'} & set(FLAGS.what):
      config = FLAGS.config
      config.training.compute_dtype = 'float32'
      setup = _setup(config)
      cache_dir = os.path.join(tmp, 'cache')
      bench_cache(config, folder, cache_dir, emit, setup)
      if 'train' in FLAGS.what:
        bench_train(config, folder, cache_dir, emit, setup)
  if FLAGS.out:
    with open(FLAGS.out, 'a') as f:
      for line in lines:
        f.write(json.dumps(line) + '\n')


if __name__ == '__main__':
  app.run(main)
