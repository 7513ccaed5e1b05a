"""Super-resolution on held-out images, the paper's Table 5 protocol (x4 on ImageNet validation,
SR3's bicubic degradation, 100 DDIM steps; LDM-4: FID 2.8, IS 166.3, PSNR 24.4, SSIM 0.69):

  python -m ldm_jax.eval.superres --workdir=runs/digits/superres               # digits 'test'
  python -m ldm_jax.eval.superres --workdir=runs/sr_imagenet --split=validation --num_images=50000

For each held-out image: the low-resolution input is made as in training (config.data.degradation;
the bicubic downscale is deterministic), the model samples the high-resolution image (DDIM, steps
and eta as flags), and we report PSNR (dB, uint8 images in [0, 1], mean and std over images) of
  consistency   bicubic downscale of the output vs the input (paper: "downsampled again, matches")
  to_original   the output vs the original image (Table 5's PSNR)
and the same two for the bicubic upscale of the input as a baseline; SSIM of the output (and of
the bicubic baseline) to the original (``ldm_jax.eval.metrics.ssim``: Gaussian window 11, sigma
1.5, as scikit-image); with ``--fid`` (default on) FID of the outputs against the originals'
Inception features (Table 5's "val feats" column) and, with a classifier (``--inception=<.pth>``),
the Inception Score of the outputs. Writes WORKDIR/eval/superres_<step>_<split>.json.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.eval.metrics import psnr, ssim
from ldm_jax.images import to_uint8
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
  flags.DEFINE_bool('fid', True, 'FID (and IS with a classifier) of the outputs vs the originals.')
  flags.DEFINE_string('inception', 'fid-helper', "Inception weights ('fid-helper' or a .pth).")


def _psnr(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
  return np.asarray(psnr(np.float32(a_uint8) / 255.0, np.float32(b_uint8) / 255.0))


def _ssim(a_uint8: np.ndarray, b_uint8: np.ndarray) -> np.ndarray:
  return np.asarray(ssim(np.float32(a_uint8) / 255.0, np.float32(b_uint8) / 255.0))


# The paper's Table 5 setting: DDIM, 100 steps, eta 1.
TABLE5 = dict(sampler='ddim', steps=100, eta=1.0, batch_size=64)


def evaluate(
  pipe, split: str, num_images: int = 0, options=None, *, fid: bool = False, **kwargs
) -> dict:
  """PSNR/SSIM (and FID with ``fid``) of the super-resolution model ``pipe`` on ``num_images``
  (0 = all) of ``split``, against bicubic upsampling. ``options``: a SamplingOptions (default:
  Table 5's, ``TABLE5``); its fields, and ``inception``, may be given as keywords."""
  from ldm_jax.data.pipeline import eval_batches
  from ldm_jax.sampling.options import SamplingOptions

  inception = kwargs.pop('inception', 'fid-helper')
  options = dataclasses.replace(options or SamplingOptions(**TABLE5), **kwargs)
  task = pipe.ldm.task if pipe.ldm is not None else None
  if task is None or not task.upsamples:
    raise ValueError(
      f'{task.name if task else "an autoencoder"}: this evaluation needs a super-resolution LDM'
    )
  data = pipe.config.data.copy_and_resolve_references()
  data.split = split
  scores = _Scores(pipe.downsampling, inception if fid else None)
  seen = 0
  for batch in eval_batches(data, options.batch_size, num_images):
    hr = to_uint8(batch['image'])
    n = len(hr)
    # the low-resolution input as in training
    lr_model = task.training_condition([{'image': im} for im in hr], list(range(seen, seen + n)))
    batch_options = dataclasses.replace(options, seed=options.seed + seen)
    out = pipe.sample(n, batch_options, lr_image=lr_model * 0.5 + 0.5)
    scores.add(out, hr, to_uint8(lr_model))
    seen += n
  report = {
    'images': seen,
    'split': split,
    'steps': options.steps,
    'eta': options.eta,
    'degradation': pipe.config.data.degradation,
    'factor': pipe.downsampling,
  }
  return scores.report(report)


class _Scores:
  """PSNR (consistency with the input and to the original) and SSIM of the outputs and of bicubic
  upsampling; FID (and IS with a classifier) of the outputs against the originals with
  ``inception`` weights (None: no FID)."""

  def __init__(self, factor: int, inception: str | None):
    self.factor = factor
    self.rows = {
      k: [] for k in ('consistency', 'to_original', 'bicubic_consistency', 'bicubic_to_original')
    }
    self.ssims = {'ssim': [], 'bicubic_ssim': []}
    self.features_fn = None
    if inception is not None:
      from ldm_jax.eval.sample_quality import InceptionFeatures

      self.features_fn = InceptionFeatures(inception)
    self.feats: dict = {'outputs': [], 'originals': [], 'probs': []}

  def add(self, out, hr, lr) -> None:
    from PIL import Image

    from ldm_jax.tasks.degradations import bicubic_downscale

    up = np.stack(
      [np.asarray(Image.fromarray(im).resize(hr.shape[1:3][::-1], Image.BICUBIC)) for im in lr]
    )
    down = lambda x: np.stack([bicubic_downscale(im, self.factor) for im in x])
    rows = self.rows
    rows['consistency'].append(_psnr(down(out), lr))
    rows['to_original'].append(_psnr(out, hr))
    rows['bicubic_consistency'].append(_psnr(down(up), lr))
    rows['bicubic_to_original'].append(_psnr(up, hr))
    self.ssims['ssim'].append(_ssim(out, hr))
    self.ssims['bicubic_ssim'].append(_ssim(up, hr))
    if self.features_fn is not None:
      fo = self.features_fn(out)
      self.feats['outputs'].append(fo['pool'])
      self.feats['originals'].append(self.features_fn(hr)['pool'])
      if 'probs' in fo:
        self.feats['probs'].append(fo['probs'])

  def report(self, report: dict) -> dict:
    for k, v in self.rows.items():
      v = np.concatenate(v)
      report[f'psnr_{k}'] = float(v.mean())
      report[f'psnr_{k}_std'] = float(v.std())
    for k, v in self.ssims.items():
      v = np.concatenate(v)
      report[k], report[f'{k}_std'] = float(v.mean()), float(v.std())
    if self.features_fn is None:
      return report
    from ldm_jax.eval.fid import feature_stats, frechet_distance, inception_score

    feats = self.feats
    outputs, originals = np.concatenate(feats['outputs']), np.concatenate(feats['originals'])
    report['fid'] = frechet_distance(*feature_stats(outputs), *feature_stats(originals))
    report['fid_reference'] = 'the original images of the same split (Table 5: val feats)'
    if feats['probs']:
      probs = np.concatenate(feats['probs'])
      report['inception_score'], report['inception_score_std'] = inception_score(
        probs, 10 if len(probs) >= 10 else 1
      )
    else:
      report['inception_score'] = None
      report['inception_score_note'] = 'needs --inception=<pytorch-fid .pth> (the classifier)'
    return report


def main(argv):
  del argv
  import ldm_jax
  from ldm_jax.eval.inception_weights import require_weights
  from ldm_jax.sampling.options import SamplingOptions

  if FLAGS.fid:  # before any work: missing weights are one line, not a traceback after sampling
    require_weights(FLAGS.inception, '--fid (the default; --nofid turns it off)')
  log_backend()

  pipe = ldm_jax.load(FLAGS.workdir)
  options = SamplingOptions(
    sampler='ddim', steps=FLAGS.steps, eta=FLAGS.eta, seed=FLAGS.seed, batch_size=FLAGS.batch_size
  )
  report = evaluate(
    pipe, FLAGS.split, FLAGS.num_images, options, fid=FLAGS.fid, inception=FLAGS.inception
  )
  out = storage.join(FLAGS.workdir, 'eval', f'superres_{pipe.step}_{FLAGS.split}.json')
  storage.write_text(out, json.dumps(report, indent=1))
  print(json.dumps(report, indent=1))


if __name__ == '__main__':
  _define_flags()
  flags.mark_flag_as_required('workdir')
  from ldm_jax.runtime import run_cli

  run_cli(main)
