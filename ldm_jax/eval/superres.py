"""Super-resolution fidelity on held-out images: does the output, downscaled again, give back the
input? And how close is it to the original high-resolution image?

  python -m ldm_jax.eval.superres --workdir=runs/digits/superres               # digits 'test'
  python -m ldm_jax.eval.superres --workdir=runs/sr_imagenet --split=validation --num_images=1000

For each held-out image: the low-resolution input is made as in training (config.data.degradation;
the bicubic downscale is deterministic), the model samples the high-resolution image (DDIM, steps
and eta as flags), and we report PSNR (dB, uint8 images in [0, 1], mean and std over images) of
  consistency   bicubic downscale of the output vs the input (paper: "downsampled again, matches")
  to_original   the output vs the original image (paper Table 5's PSNR, 24.4 for LDM-4 on ImageNet)
and the same two for the bicubic upscale of the input as a baseline. Writes
WORKDIR/eval/superres_<step>_<split>.json.
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.eval.metrics import psnr
from ldm_jax.runtime import log_backend

FLAGS = flags.FLAGS


def _define_flags():
  """Flags of the command line only (importing evaluate() defines none)."""
  flags.DEFINE_string('workdir', None, 'Workdir of a super-resolution LDM.')
  flags.DEFINE_string('split', 'test', 'Held-out split of config.data.')
  flags.DEFINE_integer('num_images', 0, 'Images to evaluate (0 = the whole split).')
  flags.DEFINE_integer('steps', 100, 'DDIM steps.')
  flags.DEFINE_float('eta', 1.0, 'DDIM eta.')
  flags.DEFINE_integer('batch_size', 64, 'Images per sampling call.')
  flags.DEFINE_integer('seed', 0, 'Sampling seed.')


def _psnr(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
  return np.asarray(psnr(np.float32(a_uint8) / 255.0, np.float32(b_uint8) / 255.0))


def evaluate(
  pipe,
  split: str,
  num_images: int = 0,
  steps: int = 100,
  eta: float = 1.0,
  batch_size: int = 64,
  seed: int = 0,
) -> dict:
  from PIL import Image

  from ldm_jax.data.pipeline import eval_batches
  from ldm_jax.images import to_uint8
  from ldm_jax.tasks.degradations import bicubic_downscale

  config = pipe.config
  task = pipe.ldm.task if pipe.ldm is not None else None
  if task is None or task.name != 'superres':
    raise ValueError(
      f'{task.name if task else "an autoencoder"}: this evaluation needs a super-resolution LDM'
    )
  data = config.data.copy_and_resolve_references()
  data.split = split
  f = pipe.downsampling
  rows = {
    k: [] for k in ('consistency', 'to_original', 'bicubic_consistency', 'bicubic_to_original')
  }
  seen = 0
  for batch in eval_batches(data, batch_size, num_images):
    hr = to_uint8(batch['image'])
    n = len(hr)
    # the low-resolution input as in training
    lr_model = task.training_condition([{'image': im} for im in hr], list(range(seen, seen + n)))
    lr = to_uint8(lr_model)
    out = pipe.sample(
      n,
      lr_image=lr_model * 0.5 + 0.5,
      sampler='ddim',
      steps=steps,
      eta=eta,
      seed=seed + seen,
      batch_size=batch_size,
    )
    up = np.stack(
      [np.asarray(Image.fromarray(im).resize(hr.shape[1:3][::-1], Image.BICUBIC)) for im in lr]
    )
    down = lambda x: np.stack([bicubic_downscale(im, f) for im in x])
    rows['consistency'].append(_psnr(down(out), lr))
    rows['to_original'].append(_psnr(out, hr))
    rows['bicubic_consistency'].append(_psnr(down(up), lr))
    rows['bicubic_to_original'].append(_psnr(up, hr))
    seen += n
  report = {
    'images': seen,
    'split': split,
    'steps': steps,
    'eta': eta,
    'degradation': config.data.degradation,
    'factor': f,
  }
  for k, v in rows.items():
    v = np.concatenate(v)
    report[f'psnr_{k}'] = float(v.mean())
    report[f'psnr_{k}_std'] = float(v.std())
  return report


def main(argv):
  del argv
  import ldm_jax

  log_backend()

  pipe = ldm_jax.load(FLAGS.workdir)
  report = evaluate(
    pipe, FLAGS.split, FLAGS.num_images, FLAGS.steps, FLAGS.eta, FLAGS.batch_size, FLAGS.seed
  )
  out = storage.join(FLAGS.workdir, 'eval', f'superres_{pipe.step}_{FLAGS.split}.json')
  storage.write_text(out, json.dumps(report, indent=1))
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  _define_flags()
  flags.mark_flag_as_required('workdir')
  from ldm_jax.runtime import run_cli

  run_cli(main)
