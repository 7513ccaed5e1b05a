"""Draw samples from a trained LDM workdir (EMA weights by default).

  python sample.py --workdir=runs/digits/ldm --num_samples=100 --sampler=ddim --steps=50 \
      --class_label=all --guidance_scale=3 --outdir=runs/digits/samples

Writes OUTDIR/000000.png ..., OUTDIR/grid.png and OUTDIR/samples.npz (uint8 images, labels).
"""
from __future__ import annotations

import logging
import os
import sys
import time

from absl import app, flags

from ldm_jax.runtime import setup_runtime

flags.DEFINE_string('workdir', None, 'Workdir of an LDM training run.')
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
flags.DEFINE_integer('num_samples', 16, 'Number of images.')
flags.DEFINE_enum('sampler', 'ddim', ['ddim', 'plms', 'ddpm'], 'Sampler.')
flags.DEFINE_integer('steps', 50, 'Sampling steps (ddim/plms; the reference grid may realise more).')
flags.DEFINE_float('eta', 0.0, 'DDIM eta (0 = deterministic).')
flags.DEFINE_string('class_label', None, "Class index, or 'all' to cycle through the classes "
                    '(class-conditional models only).')
flags.DEFINE_float('guidance_scale', 1.0, 'Classifier-free guidance scale (1 = none).')
flags.DEFINE_integer('seed', 0, 'Random seed.')
flags.DEFINE_integer('batch_size', 64, 'Images per sampling call (rounded to the device count).')
flags.DEFINE_bool('use_ema', True, 'Sample with the EMA weights when the run has them.')
flags.DEFINE_string('outdir', None, 'Output directory (default: WORKDIR/samples/step_N).')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  setup_runtime()
  import jax
  import numpy as np
  from ldm_jax.pipeline import load_ldm, sample_labels
  from ldm_jax.generate import make_generate_fn, to_uint8
  from ldm_jax.images import make_grid, save_png

  pipe = load_ldm(FLAGS.workdir, FLAGS.step, use_ema=FLAGS.use_ema)
  labels = sample_labels(pipe.config, FLAGS.class_label, FLAGS.num_samples)
  n_dev = jax.device_count()
  batch = max(n_dev, FLAGS.batch_size - FLAGS.batch_size % n_dev)
  generate = make_generate_fn(pipe.ldm, pipe.latent_shape, sampler=FLAGS.sampler, steps=FLAGS.steps,
                              eta=FLAGS.eta, guidance_scale=FLAGS.guidance_scale,
                              null_label=pipe.config.cond_stage.null_label)
  outdir = FLAGS.outdir or os.path.join(FLAGS.workdir, 'samples', f'step_{pipe.step}')
  os.makedirs(outdir, exist_ok=True)
  images, t0 = [], time.time()
  for start in range(0, FLAGS.num_samples, batch):
    chunk = labels[start:start + batch]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk))])
    key = jax.random.fold_in(jax.random.PRNGKey(FLAGS.seed), start)
    out = generate(pipe.params, pipe.first_stage_params, pipe.scale_factor,
                   pipe.shard_batch(padded), key)
    images.append(np.asarray(jax.device_get(to_uint8(out)))[:len(chunk)])
  images = np.concatenate(images)
  elapsed = time.time() - t0
  for i, im in enumerate(images):
    save_png(os.path.join(outdir, f'{i:06d}.png'), im)
  nrow = pipe.num_classes if FLAGS.class_label == 'all' else None
  save_png(os.path.join(outdir, 'grid.png'), make_grid(images, nrow=nrow))
  np.savez(os.path.join(outdir, 'samples.npz'), images=images, labels=labels)
  logging.info('%d samples (%s, %s steps, guidance %.2f) in %.1fs -> %s', len(images),
               FLAGS.sampler, FLAGS.steps, FLAGS.guidance_scale, elapsed, outdir)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
