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
  python sample.py --workdir=runs/sd_v1 --prompt='a photograph of an astronaut riding a horse' \
      --negative_prompt='blurry' --guidance_scale=7.5 --height=512 --width=768
  python sample.py --workdir=runs/sd_v1 --prompt='an oil painting' --init_image=photo.png --strength=0.6

The task flag depends on the model (sample.py says which one it expects). Writes OUTDIR/000000.png
..., OUTDIR/grid.png and OUTDIR/samples.npz (uint8 images [N, H, W, 3]; class models:
labels).
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.errors import UserError
from ldm_jax.runtime import log_backend, progress, setup_runtime
from ldm_jax.sampling.flags import define_model_flags, define_sampler_flags, sampling_options
from ldm_jax.sampling.options import IMG2IMG_NOISE
from ldm_jax.tasks import TASK_INPUT_HELP

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
# Task inputs: one, by the model; each task declares its own (ldm_jax/tasks: input_help).
for _name, _help in TASK_INPUT_HELP.items():
  flags.DEFINE_string(_name, None, _help)
flags.DEFINE_string(
  'negative_prompt',
  None,
  'Text-to-image with guidance: what to steer away from (in place of the empty prompt).',
)
flags.DEFINE_string(
  'init_image',
  None,
  'Image-to-image (any model): start from this image noised to --strength; its size sets '
  'the output size.',
)
flags.DEFINE_float(
  'strength',
  0.8,
  'Image-to-image: the share of the sampler steps run from the noised init image (0 keeps it, '
  '1 ignores it): the last int(strength x steps) steps of the grid, from the init latent noised '
  "to the level of the first step run (diffusers' rule; see --img2img_noise).",
)
flags.DEFINE_enum(
  'img2img_noise',
  'diffusers',
  list(IMG2IMG_NOISE),
  'Image-to-image: the noise level of the init latent. diffusers: the first step run; compvis: '
  'one grid step higher, as CompVis scripts/img2img.py (compare with the original there).',
)
flags.DEFINE_float(
  'denoising_end',
  None,
  'Stop where this share of the schedule is denoised and write the latents (OUTDIR/latents.npz) '
  "instead of images: SDXL's base before the refiner (diffusers' denoising_end).",
)
flags.DEFINE_float(
  'denoising_start',
  None,
  'Continue --latents (a run stopped at --denoising_end) from this share of the schedule, no '
  "noise added: SDXL's refiner after the base (diffusers' denoising_start).",
)
flags.DEFINE_string(
  'latents', None, 'A latents.npz written with --denoising_end: the starting latents.'
)
flags.DEFINE_integer(
  'tile',
  0,
  'Denoise and decode latents larger than this in overlapping '
  'tiles (0 = never; the reference notebook uses 128 for large super-'
  'resolution inputs).',
)
flags.DEFINE_integer('tile_stride', 0, 'Tile stride (default: tile // 2).')
flags.DEFINE_list(
  'lora',
  None,
  'LoRA file(s) merged into the weights: diffusers/PEFT (pytorch_lora_weights.safetensors) or '
  'kohya (lora_unet_...), comma-separated.',
)
flags.DEFINE_list('lora_scale', None, 'Their scale(s) (default 1; 0 = the base model).')
flags.DEFINE_string('outdir', None, 'Output directory (default: WORKDIR/samples/step_N).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  if bool(FLAGS.workdir) == bool(FLAGS.config):
    raise UserError('give exactly one of --workdir (trained or converted) and --config')
  for name in ('num_samples', 'batch_size', 'steps'):
    value = getattr(FLAGS, name)
    if value is not None and value < 1:
      raise UserError(f'--{name}={value}: must be at least 1')
  setup_runtime()
  log_backend()
  from ldm_jax import load
  from ldm_jax.tasks import TASK_ARGS

  scales = [float(x) for x in FLAGS.lora_scale or []]
  if scales and not FLAGS.lora:
    raise UserError('--lora_scale scales the --lora files; give --lora=FILE[,FILE]')
  lora_scale = scales if len(scales) > 1 else (scales[0] if scales else 1.0)
  pipe = load(
    FLAGS.workdir or FLAGS.config,
    FLAGS.step,
    use_ema=FLAGS.use_ema,
    seed=FLAGS.seed,
    lora=FLAGS.lora,
    lora_scale=lora_scale,
  )
  if pipe.ldm is None:
    raise UserError(
      f'{FLAGS.workdir or FLAGS.config} holds an autoencoder (the first stage), which does not '
      'sample: give the workdir of an LDM run (its reconstructions: python -m '
      'ldm_jax.eval.reconstruction)'
    )
  task = {k: getattr(FLAGS, k) for k in TASK_ARGS if getattr(FLAGS, k) is not None}
  options = sampling_options(pipe)
  outdir = FLAGS.outdir or storage.join(FLAGS.workdir or 'samples', 'samples', f'step_{pipe.step}')
  out = SampleFolder(outdir, _settings(pipe, options, task, lora_scale))
  try:
    _sample(pipe, out, options, task)
  except BaseException:
    out.remove_if_unused()  # a mistake found once sampling starts leaves no empty folder
    raise


def _settings(pipe, options, task: dict, lora_scale) -> dict:
  """What decides the samples, for OUTDIR/sampling.json."""
  settings = {
    'model': storage.resolve(FLAGS.workdir or FLAGS.config),
    'step': pipe.step,
    'use_ema': FLAGS.use_ema,
    'num_samples': FLAGS.num_samples,
    **options.settings(),
    'batch_size': pipe.batch_for(options.batch_size),
    'height': FLAGS.height,
    'width': FLAGS.width,
    **{k: str(v) for k, v in task.items()},
  }
  if FLAGS.latents:
    settings['latents'] = storage.resolve(FLAGS.latents)
  if FLAGS.lora:
    settings.update(lora=[storage.resolve(f) for f in FLAGS.lora], lora_scale=lora_scale)
  if FLAGS.init_image:
    settings.update(
      init_image=str(FLAGS.init_image),
      strength=options.strength,
      img2img_noise=options.img2img_noise,
    )
  return settings


def _sample(pipe, out: SampleFolder, options, task: dict) -> None:
  outdir = out.outdir
  if FLAGS.latents:
    with storage.open_file(FLAGS.latents) as f:
      task = {**task, 'latents': np.load(f)['latents'][: FLAGS.num_samples]}
  if options.denoising_end < 1:  # the hand-off: latents out, no images
    latents = pipe.sample(FLAGS.num_samples, options, return_latents=True, height=FLAGS.height,
                          width=FLAGS.width, init_image=FLAGS.init_image, **task)  # fmt: skip
    storage.save_npz(storage.join(outdir, 'latents.npz'), latents=latents)
    logging.info('%d latents %s at denoising_end=%s -> %s', len(latents), latents.shape[1:],
                 options.denoising_end, storage.join(outdir, 'latents.npz'))  # fmt: skip
    return
  t0 = time.time()
  first = out.resume_index(pipe.batch_for(options.batch_size))
  batches = pipe.iter_samples(
    FLAGS.num_samples,
    options,
    first=first,
    height=FLAGS.height,
    width=FLAGS.width,
    init_image=FLAGS.init_image,
    **task,
  )
  for images in progress(batches, FLAGS.num_samples - first, 'sampling'):
    out.add(images)  # written as drawn: a killed run keeps them and continues from there
  elapsed = time.time() - t0
  images = out.finish(pipe.num_classes if FLAGS.class_label == 'all' else None)
  extra = {}
  if pipe.num_classes:  # the labels sampled, for evaluation
    extra['labels'] = pipe.ldm.task.labels(FLAGS.class_label, len(images))
  storage.save_npz(storage.join(outdir, 'samples.npz'), images=images, **extra)
  logging.info(
    '%d samples %s (%s, %s steps) in %.1fs -> %s%s',
    len(images),
    images.shape[1:3],
    options.sampler,
    options.steps,
    elapsed,
    outdir,
    f' ({first} were there from an earlier run)' if first else '',
  )


class SampleFolder:
  """OUTDIR/000000.png ... written batch by batch, with OUTDIR/sampling.json (the settings). The
  folder is checked for writing before any sampling; a run with the same settings continues
  after the images a killed run left (samples depend only on seed and index), one with other
  settings is refused rather than mixed in."""

  def __init__(self, outdir: str, settings: dict):
    self.outdir, self.settings = outdir, json.loads(json.dumps(settings))
    self.next, self.drawn = 0, []  # this run's images, kept for the grid and samples.npz
    info = storage.join(outdir, 'sampling.json')
    self.created = []  # local folders this run makes (outdir and missing parents), innermost last
    path = None if storage.is_url(outdir) else os.path.abspath(outdir)
    while path and not os.path.exists(path):
      self.created.insert(0, path)
      path = os.path.dirname(path)
    try:
      storage.makedirs(outdir)
      self.previous = json.loads(storage.read_text(info)) if storage.exists(info) else None
      if self.previous is None or self.previous == self.settings:
        storage.write_text(info, json.dumps(self.settings, indent=1))
    except OSError as e:
      raise UserError(
        f'cannot write samples to {outdir!r} ({type(e).__name__}: {e.strerror or e}); '
        'give a writable --outdir'
      ) from e

  def remove_if_unused(self) -> None:
    """Undo this run's folders when it wrote no image into them."""
    if not self.created or self.next > 0:
      return
    try:
      os.remove(os.path.join(self.created[-1], 'sampling.json'))
      for path in reversed(self.created):
        os.rmdir(path)
    except OSError:
      pass  # something else is there now: leave it

  def _png(self, i: int) -> str:
    return storage.join(self.outdir, f'{i:06d}.png')

  def resume_index(self, batch: int) -> int:
    """Where to start: after the whole batches an earlier run with these settings wrote."""
    if self.previous is None:
      return 0
    done = 0
    while storage.exists(self._png(done)):
      done += 1
    if self.previous != self.settings:
      if not done:
        return 0
      changed = sorted(k for k in self.settings if self.settings[k] != self.previous.get(k))
      raise UserError(
        f'{self.outdir!r} already holds {done} samples drawn with other settings '
        f'({", ".join(changed)}); give another --outdir, or delete those to start over'
      )
    self.next = min(done - done % batch, self.settings['num_samples'])
    return self.next

  def add(self, images) -> None:
    from ldm_jax.images import save_png

    for im in images:
      save_png(self._png(self.next), im)
      self.next += 1
    self.drawn.append(images)

  def finish(self, nrow):
    """All samples (those of an earlier run read back), with grid.png written."""
    from PIL import Image

    from ldm_jax.images import make_grid, save_png

    earlier = []
    for i in range(self.next - sum(len(b) for b in self.drawn)):
      with storage.open_file(self._png(i)) as f, Image.open(f) as im:
        earlier.append(np.asarray(im.convert('RGB'))[None])
    images = np.concatenate(earlier + self.drawn)
    save_png(storage.join(self.outdir, 'grid.png'), make_grid(images, nrow=nrow))
    return images


def run() -> None:
  """The console script (``ldm-sample``) and ``python -m ldm_jax.sampling``."""
  from ldm_jax.runtime import run_cli

  run_cli(main)


if __name__ == '__main__':
  run()
