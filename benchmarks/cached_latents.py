"""Cached-latent LDM training vs encoding every batch: time and FLOPs of one training step.

  python benchmarks/cached_latents.py --config=configs/lsun_churches.py --batch_size=1 --steps=3

Times the jitted training step (the trainer's: per-example draws, NaN guard, donated state) on a
batch of images, where the frozen first stage encodes every image, and on a batch of cached
posterior moments (config.data.cache_latents), with random weights (speed does not depend on
them). Also reports XLA's FLOP count of each compiled step. Prints a Markdown row for
BENCHMARKS.md. Input decoding is not included (the cache removes it too).
"""

from __future__ import annotations

import datetime
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/
from benchmarks.common import random_weights  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/lsun_churches.py', 'LDM config to measure.')
flags.DEFINE_integer('batch_size', 0, "Global batch (0 = the config's).")
flags.DEFINE_integer('steps', 5, 'Timed steps per variant (after one warm-up step).')


def measure(step, state, batch, frozen, steps):
  import jax

  compiled = step.lower(state, batch, frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan'))) if cost else float('nan')
  state, m = compiled(state, batch, frozen)  # warm-up
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, batch, frozen)
  jax.block_until_ready((state, m))
  return (time.perf_counter() - t0) / steps, flops, state


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ldm_jax.latent_diffusion import LatentDiffusion, latent_shape
  from ldm_jax.train.ldm_step import make_ldm_step
  from ldm_jax.train.state import TrainState, make_optimizer
  from ldm_jax.train.step_common import guard_nonfinite

  config = FLAGS.config
  b = FLAGS.batch_size or config.training.batch_size
  config.training.batch_size = b
  t = config.training
  ldm = LatentDiffusion.from_config(config, t.compute_dtype, t.remat)
  tx = make_optimizer(config)
  params, fs_params = random_weights(config, ldm)
  size = config.data.image_size
  rng = np.random.default_rng(0)
  h, w, c = latent_shape(config)
  moments_c = 2 * c if config.first_stage.kind == 'kl' else c
  batches = {
    'images (encode every step)': {
      'image': jnp.asarray(rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32))
    },
    'cached latents': {
      'moments': jnp.asarray(rng.normal(0, 1, (b, h, w, moments_c)).astype(np.float32))
    },
  }
  step = jax.jit(guard_nonfinite(make_ldm_step(ldm, tx, config)), donate_argnums=(0,))
  results = {}
  for name, batch in batches.items():
    if config.cond_stage.kind == 'class':
      batch['label'] = jnp.zeros((b,), jnp.int32)
    state = TrainState.create(jax.tree.map(jnp.copy, params), tx, t.use_ema, 1.0)  # donated
    sec, flops, _ = measure(step, state, batch, fs_params, FLAGS.steps)
    results[name] = (sec, flops)
    print(f'{name:28s} {sec:8.3f} s/step  {b / sec:8.2f} img/s  {flops / 1e9:10.1f} GFLOP/step')
  (s_img, f_img), (s_cache, f_cache) = results.values()
  device = jax.devices()[0]
  print(f'speed-up {s_img / s_cache:.2f}x (time), {f_img / f_cache:.2f}x (FLOPs)')
  print(
    f'| {datetime.date.today()} | {device.platform} {device.device_kind} x{jax.device_count()} '
    f'| {FLAGS.config.data.image_size}px, batch {b}, {t.compute_dtype} | '
    f'{b / s_img:.3g} img/s | {b / s_cache:.3g} img/s | {s_img / s_cache:.2f}x | '
    f'{f_img / f_cache:.2f}x |'
  )


if __name__ == '__main__':
  app.run(main)
