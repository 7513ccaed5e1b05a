"""Sample quality of an LDM: FID, Inception Score, precision/recall against reference statistics.

  # reference statistics of the training data, with the training preprocessing (once):
  python -m ldm_jax.eval --config=configs/lsun_churches.py --ref=data --save_ref=ref/churches.npz
  # 50k samples of a run (DDIM 200 steps, eta 0, as the paper's Table 1), scored against them:
  python -m ldm_jax.eval --workdir=runs/churches/ldm --ref=ref/churches.npz --num_samples=50000 \
      --sampler=ddim --steps=200 --eta=0
  # images you already have (a folder, or sample.py's samples.npz) against a folder:
  python -m ldm_jax.eval --samples=my_samples/ --ref=real_images/

--ref is a statistics .npz (written by --save_ref, or pytorch-fid's --save-stats: FID only), a
folder or samples .npz of images, or 'data' (config.data of --workdir/--config: its source and
--split, the first --ref_images images). Samples are generated in batches split over all local
devices and never held in memory all at once. Class-conditional models cycle through the classes
(--class_label=all), unconditional ones need nothing; other conditions are not generated here
(score their outputs with --samples). The report (JSON) goes to --out (default:
WORKDIR/eval/quality_<step>_<sampler><steps>_eta<eta>_cfg<scale>_<n>.json) and stdout.
"""

from __future__ import annotations

import json
import sys
import time

from absl import flags

from ldm_jax import storage
from ldm_jax.errors import UserError
from ldm_jax.runtime import log_backend, setup_runtime
from ldm_jax.sampling.flags import define_model_flags, define_sampler_flags

define_model_flags()
flags.DEFINE_string(
  'samples', None, 'Score these images instead of generating: a folder or a samples .npz.'
)
flags.DEFINE_string(
  'ref', None, "Reference: statistics .npz, a folder or .npz of images, or 'data'."
)
flags.DEFINE_string('save_ref', None, 'Write the reference statistics (mu, sigma, features) here.')
flags.DEFINE_string('split', None, '--ref=data: the split (default: config.data.split).')
flags.DEFINE_integer('ref_images', 50000, 'Reference: at most this many images (0 = all).')
flags.DEFINE_integer(
  'image_size',
  0,
  'Folders: centre-crop and resize to this size (default: '
  "the model size for --ref=folder, else the first image's shorter side).",
)
flags.DEFINE_integer('num_samples', 50000, 'Samples to generate (or read at most from --samples).')
define_sampler_flags(batch_size=100)
flags.DEFINE_string('class_label', 'all', "Class models: 'all' (cycle the classes) or one index.")
flags.DEFINE_string(
  'inception',
  'fid-helper',
  "Inception weights: 'fid-helper', a TorchScript "
  ".pt, or pytorch-fid's .pth (adds the Inception Score).",
)
flags.DEFINE_integer('k', 3, 'Nearest neighbours of precision/recall.')
flags.DEFINE_string('out', None, 'JSON report path.')
FLAGS = flags.FLAGS


def _reference(features_fn, config):
  """The reference statistics dict of --ref (computed and optionally saved)."""
  from ldm_jax.eval import fid, sample_quality

  ref = FLAGS.ref
  if ref.endswith('.npz') and storage.isfile(ref):
    if 'mu' in storage.load_npz(ref):
      return fid.load_stats(ref)
  if ref == 'data':
    if config is None:
      raise UserError('--ref=data reads config.data of --workdir or --config; give one')
    data = config.data
    if FLAGS.split:
      data.split = FLAGS.split
    batches = sample_quality.dataset_images(data, FLAGS.batch_size, FLAGS.ref_images)
    what = f'{data.source}:{data.get("name") or data.get("path") or ""}:{data.split}'
  elif storage.exists(ref):
    size = FLAGS.image_size or (config.data.image_size if config is not None else 0)
    batches = sample_quality.image_set(ref, size, FLAGS.batch_size, FLAGS.ref_images)
    what = storage.resolve(ref)
  else:
    raise UserError(f"--ref {ref!r}: not a statistics .npz, a folder, an images .npz or 'data'")
  t0 = time.time()
  stats = sample_quality.reference_stats(
    features_fn.collect(batches, FLAGS.ref_images or 0, 'reference statistics'),
    FLAGS.save_ref,
    source=what,
    inception=FLAGS.inception,
  )
  print(
    f'reference: {int(stats["num_images"])} images of {what} in {time.time() - t0:.0f}s'
    + (f' -> {FLAGS.save_ref}' if FLAGS.save_ref else ''),
    file=sys.stderr,
  )
  return stats


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  generate = _check_flags()
  from ldm_jax.eval.inception_weights import require_weights

  require_weights(FLAGS.inception, 'python -m ldm_jax.eval (FID)')
  setup_runtime()
  log_backend()
  import numpy as np

  from ldm_jax.eval import sample_quality

  pipe, config = _load(generate)
  features_fn = sample_quality.InceptionFeatures(
    FLAGS.inception, pipe.mesh if pipe is not None else None
  )
  ref = _reference(features_fn, config)
  if not (generate or FLAGS.samples):
    return  # only the reference was asked for
  report = {
    'inception': FLAGS.inception,
    'ref': storage.resolve(FLAGS.ref) if FLAGS.ref != 'data' else 'data',
  }
  t0 = time.time()
  batches = _batches(pipe, report) if generate else _files(report)
  features = features_fn.collect(batches, FLAGS.num_samples if generate else 0, 'generating')
  seconds = time.time() - t0
  report.update(sample_quality.score(features, ref, FLAGS.k))
  report['seconds'] = round(seconds, 1)
  report['images_per_second'] = round(len(features['pool']) / max(seconds, 1e-9), 2)
  out = FLAGS.out
  if out is None and FLAGS.workdir and generate:
    name = 'quality_{step}_{sampler}{steps}_eta{eta:g}_cfg{guidance_scale:g}_{num_samples}.json'
    out = storage.join(FLAGS.workdir, 'eval', name.format(**report))
  if out:
    storage.write_text(out, json.dumps(report, indent=2))
  print(json.dumps(report, indent=2, default=lambda v: np.asarray(v).tolist()))


def _check_flags() -> bool:
  """The flags' mistakes, before any work; True: samples are generated (not read)."""
  if not FLAGS.ref:
    raise UserError('--ref is required (statistics .npz, a folder of images, or data)')
  if FLAGS.workdir and FLAGS.config:
    raise UserError('give --workdir or --config, not both')
  # --config with --save_ref only names the data of --ref=data; generating from a config's
  # random weights (a pipeline check) is asked for by giving it without --save_ref
  generate = not FLAGS.samples and bool(FLAGS.workdir or (FLAGS.config and not FLAGS.save_ref))
  if not (generate or FLAGS.samples or FLAGS.save_ref):
    raise UserError('nothing to score: give --workdir (generate), --samples, or --save_ref')
  if FLAGS.samples and not storage.exists(FLAGS.samples):
    raise UserError(
      f'--samples={FLAGS.samples!r} does not exist: give a folder of images or the samples.npz '
      'that sample.py wrote'
    )
  return generate


def _load(generate: bool):
  """(the pipeline or None, the config or None) of --workdir / --config."""
  from ldm_jax import load
  from ldm_jax.config import load_config_file

  if not (generate or FLAGS.workdir):
    return None, load_config_file(FLAGS.config) if FLAGS.config else None
  pipe = load(FLAGS.workdir or FLAGS.config, FLAGS.step, use_ema=FLAGS.use_ema, seed=FLAGS.seed)
  if generate and pipe.ldm is None:
    raise UserError(
      f'{FLAGS.workdir or FLAGS.config} is an autoencoder; generate from an '
      'LDM (reconstructions: python -m ldm_jax.eval.reconstruction)'
    )
  if generate and pipe.ldm.task.samples_from_examples:
    raise UserError(
      f'this model is {pipe.ldm.task.name}-conditioned: sample it with '
      'sample.py on your conditions, then score the images with --samples'
    )
  return pipe, pipe.config


def _batches(pipe, report: dict):
  """The generated samples' batches; their settings go into ``report``."""
  from ldm_jax.sampling.flags import sampling_options

  options = sampling_options(pipe)
  task = {'class_label': FLAGS.class_label} if pipe.num_classes else {}
  report.update(
    workdir=storage.resolve(FLAGS.workdir) if FLAGS.workdir else None,
    config=FLAGS.config,
    step=int(pipe.step),
    use_ema=FLAGS.use_ema,
    **options.settings(),
    **task,
  )
  return pipe.iter_samples(FLAGS.num_samples, options, **task)


def _files(report: dict):
  """The batches of --samples (a folder or samples .npz)."""
  from ldm_jax.eval import sample_quality

  report['samples'] = storage.resolve(FLAGS.samples)
  size = FLAGS.image_size
  return sample_quality.image_set(FLAGS.samples, size, FLAGS.batch_size, FLAGS.num_samples)


if __name__ == '__main__':
  from ldm_jax.runtime import run_cli

  run_cli(main)
