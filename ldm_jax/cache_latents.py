"""Encode a dataset once with the frozen first stage, into a latent cache on disk or in a bucket:

  python -m ldm_jax.cache_latents --config=configs/lsun_churches.py --out=DIR [--config.k=v ...]

then train from it with ``--config.data.latent_cache=DIR`` (same config). Every process of a
multi-host job (run the same command on every host, as train.py) encodes its own share of the
chunks on its own devices; a rerun finishes an interrupted build; the cache records what it was made
from (first stage and its weights, data and preprocessing) and training refuses a cache that does
not match its config. Encoding runs in float32. Format: ldm_jax/data/latent_cache.py.
"""

from __future__ import annotations

import logging

from absl import flags
from ml_collections import config_flags

from ldm_jax.errors import UserError

FLAGS = flags.FLAGS
log = logging.getLogger('ldm_jax')


def build(config, out: str, batch_size: int = 0) -> dict:
  """Builds this process's share of the cache for an LDM ``config``; returns a summary."""
  import time

  import jax
  import jax.numpy as jnp

  from ldm_jax.config import validate
  from ldm_jax.data import make_source
  from ldm_jax.data.latent_cache import CHUNK, build_disk_cache, cache_stamp, params_fingerprint
  from ldm_jax.data.pipeline import random_access
  from ldm_jax.latent_diffusion import LatentDiffusion
  from ldm_jax.parallel import sharding
  from ldm_jax.train.ldm_stage import load_first_stage

  validate(config)
  if config.stage != 'ldm':
    raise UserError('a latent cache is for an LDM config (config.stage=ldm)')
  if not random_access(config.data):
    raise UserError(
      f'config.data.source={config.data.source!r} is streamed; a latent cache is built from a '
      'random-access source (digits, folder, records, or TFDS prepared as array_record)'
    )
  ldm = LatentDiffusion.from_config(config, 'float32', False)
  if ldm.task.needs_images:
    raise UserError(f'the {ldm.task.name} condition is made from the images: it trains from images')
  mesh = sharding.make_mesh(None, jax.local_devices())  # this process's devices only
  params = jax.device_put(load_first_stage(config), sharding.replicated(mesh))
  captions = 'caption' in ldm.task.annotations
  stamp = cache_stamp(config, params_fingerprint(params), captions)
  batch = batch_size or config.training.batch_size
  batch = -(-batch // mesh.size) * mesh.size
  encode = jax.jit(lambda p, x: ldm.encode_moments(p, x).astype(jnp.float32))
  batch_sh = sharding.batch_sharded(mesh)
  fn = lambda images: encode(params, jax.device_put(images, batch_sh))
  source = make_source(config.data, ldm.task.annotations)
  t0 = time.time()
  written = build_disk_cache(
    out, source, fn, batch, stamp, jax.process_index(), jax.process_count()
  )
  seconds = time.time() - t0
  images = sum(min(len(source) - k * CHUNK, CHUNK) for k in written) * (
    2 if config.data.random_flip else 1
  )
  return {
    'out': out,
    'examples': len(source),
    'chunks_written': len(written),
    'images_encoded': images,
    'seconds': round(seconds, 2),
    'images_per_second': round(images / seconds, 2) if seconds and images else None,
  }


def main(argv, build_fn=None):
  """A cache CLI's main (this one, and ldm_jax.cache_text's with its ``build_fn``): every process
  of a multi-host job builds its share; prints the summary."""
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  import json

  from ldm_jax.runtime import setup_runtime

  setup_runtime()
  from ldm_jax.parallel import distributed

  distributed.initialize('auto', '', 0, -1)
  summary = (build_fn or build)(FLAGS.config, FLAGS.out, FLAGS.batch_size)
  print(json.dumps(summary, indent=1))


def run() -> None:
  from ldm_jax.runtime import run_cli

  config_flags.DEFINE_config_file('config', None, 'An LDM config file.', lock_config=True)
  flags.DEFINE_string('out', None, 'The cache folder (local or gs://).')
  flags.DEFINE_integer('batch_size', 0, 'Images per encoder call (default: the training batch).')
  flags.mark_flags_as_required(['config', 'out'])
  run_cli(main)


if __name__ == '__main__':
  run()
