"""Scores in the ADM evaluation suite's terms (openai/guided-diffusion ``evaluations/``), the numbers
class-conditional ImageNet papers report (LDM's Table 3 included):

  python -m ldm_jax.eval.adm --ref_batch=VIRTUAL_imagenet256_labeled.npz \\
      --sample_batch=samples/samples.npz [--out=report.json]
  # write sample.py's samples as an ADM sample batch (for the suite's own evaluator):
  python -m ldm_jax.eval.adm --sample_batch=samples/samples.npz --write_batch=batch.npz

A batch is an ``.npz`` with ``arr_0`` (uint8 images [N, H, W, 3]); a reference batch may also hold
its statistics ``mu``/``sigma`` (pool features) and ``mu_s``/``sigma_s`` (spatial features),
which are then used for FID and sFID as the suite does. Samples may also be sample.py's
``samples.npz`` ('images') or a folder. Reported, with the suite's definitions:

* FID: Frechet distance of the 2,048 pool features;
* sFID: the same of the spatial features, the first 7 channels of ``mixed_6/conv`` (17 x 17,
  2,023 features; ``ldm_jax.eval.inception``);
* Inception Score: the softmax of the unbiased logits, exp(E KL) over consecutive parts of 5,000
  samples, averaged (not the 10-split mean of ``python -m ldm_jax.eval``);
* precision and recall: improved precision/recall with k = 3 on the pool features (the suite
  computes the distances in float16 where finite; here in float32).

Needs the Inception classifier for the score: ``--inception=<pytorch-fid .pth>`` (the fid-helper
weights have none; the other numbers do not need it).
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.errors import UserError

SPLIT_SIZE = 5000


def adm_inception_score(probs, split_size: int = SPLIT_SIZE) -> float:
  """The suite's Inception Score: the mean over consecutive parts of ``split_size`` samples (the
  last may be shorter) of exp(mean KL(p(y|x) || p(y)))."""
  p = np.asarray(probs, np.float64)
  scores = []
  for s in range(0, len(p), split_size):
    part = p[s : s + split_size]
    logs = np.log(np.maximum(part, 1e-30)) - np.log(np.maximum(part.mean(0, keepdims=True), 1e-30))
    kl = part * logs  # 0 log 0 = 0
    scores.append(np.exp(kl.sum(1).mean()))
  return float(np.mean(scores))


def read_batch(path: str) -> dict:
  """An ADM batch: {'images'} and whichever of 'mu', 'sigma', 'mu_s', 'sigma_s' it holds."""
  arrays = storage.load_npz(path)
  key = 'arr_0' if 'arr_0' in arrays else 'images'
  if key not in arrays:
    raise UserError(f'{path} holds neither arr_0 (an ADM batch) nor images (sample.py)')
  images = arrays[key]
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise UserError(f'{path}: {key} must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}')
  out = {'images': images}
  out.update({k: arrays[k] for k in ('mu', 'sigma', 'mu_s', 'sigma_s') if k in arrays})
  return out


def batch_features(features_fn, images, batch_size: int = 100) -> dict:
  parts: dict = {}
  for s in range(0, len(images), batch_size):
    for k, v in features_fn(images[s : s + batch_size]).items():
      parts.setdefault(k, []).append(v)
  return {k: np.concatenate(v) for k, v in parts.items()}


def write_batch(path: str, images, features: dict | None = None) -> None:
  """``images`` as an ADM batch; with ``features`` (pool, spatial) also its statistics, as the
  suite's reference batches hold them."""
  from ldm_jax.eval.fid import feature_stats

  arrays = {'arr_0': np.asarray(images, np.uint8)}
  if features is not None:
    arrays['mu'], arrays['sigma'] = feature_stats(features['pool'])
    arrays['mu_s'], arrays['sigma_s'] = feature_stats(features['spatial'])
  storage.save_npz(path, **arrays)


def evaluate(ref: dict, ref_features: dict, sample_features: dict) -> dict:
  """The suite's five numbers. ``ref``: read_batch's dict (its statistics are used when present,
  else computed from ``ref_features``)."""
  from ldm_jax.eval.fid import feature_stats, frechet_distance, precision_recall

  mu, sigma = (ref['mu'], ref['sigma']) if 'mu' in ref else feature_stats(ref_features['pool'])
  if 'mu_s' in ref:
    mu_s, sigma_s = ref['mu_s'], ref['sigma_s']
  else:
    mu_s, sigma_s = feature_stats(ref_features['spatial'])
  pool, spatial = sample_features['pool'], sample_features['spatial']
  report = {
    'num_samples': int(len(pool)),
    'reference_num_images': int(len(ref_features['pool'])),
    'reference_statistics': 'from the batch' if 'mu' in ref else 'computed from its images',
    'fid': frechet_distance(*feature_stats(pool), mu, sigma),
    'sfid': frechet_distance(*feature_stats(spatial), mu_s, sigma_s),
  }
  if 'probs' in sample_features:
    report['inception_score'] = adm_inception_score(sample_features['probs'])
  else:
    report['inception_score'] = None
    report['inception_score_note'] = 'needs --inception=<pytorch-fid .pth> (the classifier)'
  report['precision'], report['recall'] = precision_recall(ref_features['pool'], pool, 3)
  return report


def _define_flags():
  flags.DEFINE_string(
    'ref_batch', None, 'The reference batch (.npz, arr_0 [+ mu/sigma/mu_s/sigma_s]).'
  )
  flags.DEFINE_string('sample_batch', None, 'Samples: an ADM batch, sample.py .npz, or a folder.')
  flags.DEFINE_string('write_batch', None, 'Write the samples as an ADM batch .npz (and stop).')
  flags.DEFINE_string('inception', 'fid-helper', "Inception weights ('fid-helper' or a .pth).")
  flags.DEFINE_integer('batch_size', 100, 'Images per Inception call.')
  flags.DEFINE_string('out', None, 'JSON report path (default: stdout only).')
  flags.mark_flags_as_required(['sample_batch'])


def main(argv):
  del argv
  from ldm_jax.eval.inception_weights import require_weights
  from ldm_jax.eval.sample_quality import InceptionFeatures, image_set
  from ldm_jax.runtime import setup_runtime

  f = flags.FLAGS
  if not f.write_batch:  # scoring needs the Inception weights: checked before reading anything
    require_weights(f.inception, 'python -m ldm_jax.eval.adm (FID, sFID)')
  setup_runtime()
  if f.sample_batch.endswith('.npz'):
    samples = read_batch(f.sample_batch)['images']
  else:
    samples = np.concatenate(list(image_set(f.sample_batch, 0, f.batch_size)))
  if f.write_batch:
    write_batch(f.write_batch, samples)
    print(json.dumps({'wrote': f.write_batch, 'num_images': int(len(samples))}))
    return
  if not f.ref_batch:
    raise UserError('--ref_batch is needed to score (or give --write_batch to convert)')
  ref = read_batch(f.ref_batch)
  features = InceptionFeatures(f.inception, spatial=True)
  report = evaluate(
    ref,
    batch_features(features, ref['images'], f.batch_size),
    batch_features(features, samples, f.batch_size),
  )
  report.update(ref_batch=f.ref_batch, sample_batch=f.sample_batch, inception=f.inception)
  text = json.dumps(report, indent=2)
  if f.out:
    storage.write_text(f.out, text)
  print(text)


def run() -> None:
  from ldm_jax.runtime import run_cli

  _define_flags()
  run_cli(main)


if __name__ == '__main__':
  run()
