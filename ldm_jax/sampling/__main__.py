"""Draw samples from an LDM: a workdir (trained, or converted from CompVis/diffusers weights), or a
config file (random weights, for trying things offline). EMA weights by default.

  python sample.py --workdir=runs/digits/ldm --num_samples=100 --class_label=all --guidance_scale=3
  python sample.py --workdir=runs/txt2img --prompt='a virus monster is playing guitar, oil on canvas' \
      --guidance_scale=5 --steps=50 --height=256 --width=384
  python sample.py --workdir=runs/bsr_sr --lr_image=lr.png --steps=100 --eta=1
  python sample.py --workdir=runs/bsr_sr --lr_image=big.png --tile=128   # tiled, as the reference
  python sample.py --workdir=runs/inpainting --image=photo.png --mask=photo_mask.png
  python sample.py --workdir=runs/layout --layout=boxes.json
  python sample.py --workdir=runs/semantic --segmentation=labels.png

The task flag depends on the model (sample.py says which one it expects). Writes OUTDIR/000000.png
..., OUTDIR/grid.png and OUTDIR/samples.npz (uint8 images [N, H, W, 3]; class models:
labels).
"""

from __future__ import annotations

import logging
import sys
import time

from absl import app, flags

from ldm_jax import storage
from ldm_jax.runtime import log_backend, setup_runtime
from ldm_jax.sampling.flags import define_model_flags, define_sampler_flags, sampler_kwargs

define_model_flags()
flags.DEFINE_integer('num_samples', 16, 'Number of images.')
define_sampler_flags(batch_size=16)
flags.DEFINE_integer(
  'height',
  None,
  'Output height for unconditional/class/text models (default: '
  'the training size); a multiple of the first-stage factor.',
)
flags.DEFINE_integer('width', None, 'Output width, as --height.')
# Task inputs: one, by the model.
flags.DEFINE_string('class_label', None, "Class index, or 'all' to cycle through the classes.")
flags.DEFINE_string('prompt', None, 'Text prompt (text-to-image models).')
flags.DEFINE_string('lr_image', None, 'Low-resolution image (super-resolution models).')
flags.DEFINE_string('image', None, 'Image to inpaint (with --mask).')
flags.DEFINE_string('mask', None, 'Inpainting mask, white = region to fill (with --image).')
flags.DEFINE_string(
  'layout',
  None,
  'Layout JSON: [{"class": 12, "bbox": [x, y, w, h]}, ...] '
  '(relative coordinates; layout-to-image models).',
)
flags.DEFINE_string(
  'segmentation',
  None,
  'Segmentation map: PNG or .npy of class indices (semantic synthesis models).',
)
flags.DEFINE_string(
  'embeddings', None, 'Context embeddings .npy, [L, D] or [N, L, D] (retrieval-augmented models).'
)
flags.DEFINE_integer(
  'tile',
  0,
  'Denoise and decode latents larger than this in overlapping '
  'tiles (0 = never; the reference notebook uses 128 for large super-'
  'resolution inputs).',
)
flags.DEFINE_integer('tile_stride', 0, 'Tile stride (default: tile // 2).')
flags.DEFINE_string('outdir', None, 'Output directory (default: WORKDIR/samples/step_N).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if bool(FLAGS.workdir) == bool(FLAGS.config):
    raise app.UsageError('give exactly one of --workdir (trained or converted) and --config')
  setup_runtime()
  log_backend()
  from ldm_jax.images import make_grid, save_png
  from ldm_jax.sampling.pipeline import load
  from ldm_jax.tasks import TASK_ARGS, TaskInputError

  pipe = load(FLAGS.workdir or FLAGS.config, FLAGS.step, use_ema=FLAGS.use_ema, seed=FLAGS.seed)
  task = {k: getattr(FLAGS, k) for k in TASK_ARGS if getattr(FLAGS, k) is not None}
  t0 = time.time()
  try:
    images = pipe.sample(
      FLAGS.num_samples,
      height=FLAGS.height,
      width=FLAGS.width,
      tile=FLAGS.tile,
      tile_stride=FLAGS.tile_stride,
      **sampler_kwargs(FLAGS),
      **task,
    )
  except TaskInputError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  elapsed = time.time() - t0
  outdir = FLAGS.outdir or storage.join(FLAGS.workdir or 'samples', 'samples', f'step_{pipe.step}')
  storage.makedirs(outdir)
  for i, im in enumerate(images):
    save_png(storage.join(outdir, f'{i:06d}.png'), im)
  nrow = pipe.num_classes if FLAGS.class_label == 'all' else None
  save_png(storage.join(outdir, 'grid.png'), make_grid(images, nrow=nrow))
  extra = {}
  if pipe.num_classes:  # the labels sampled, for evaluation
    extra['labels'] = pipe.ldm.task.labels(FLAGS.class_label, len(images))
  storage.save_npz(storage.join(outdir, 'samples.npz'), images=images, **extra)
  s = pipe.config.sampling
  logging.info(
    '%d samples %s (%s, %s steps) in %.1fs -> %s',
    len(images),
    images.shape[1:3],
    FLAGS.sampler or s.sampler,
    FLAGS.steps or s.steps,
    elapsed,
    outdir,
  )


def run() -> None:
  """The console script (``ldm-sample``) and ``python -m ldm_jax.sampling``."""
  from ldm_jax.runtime import resolve_config_argv

  sys.argv = resolve_config_argv(sys.argv)
  app.run(main)


if __name__ == '__main__':
  run()
