"""Quality against model evaluations of every sampler on a digits LDM (the demo's, or the text
task): class accuracy (the demo's classifier, trained on real digits only) and the Frechet distance
to the held-out real digits in that classifier's 64-d feature space (grey 8x8 block means; not
Inception: cheap enough on a CPU for every cell, and what the classifier sees).

  python benchmarks/solver_quality.py --workdir=runs/digits/ldm --out=benchmarks/results/solver_quality.jsonl
  python benchmarks/solver_quality.py --out=... --markdown

Rows already in --out are skipped (the run can be stopped and continued).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string('workdir', 'runs/digits/ldm', 'A digits LDM (class or text task).')
flags.DEFINE_string('out', 'benchmarks/results/solver_quality.jsonl', 'JSON lines.')
flags.DEFINE_list('evals', ['5', '10', '20', '50'], 'Model evaluations per sample.')
flags.DEFINE_list(
  'samplers',
  'ddim,plms,dpmpp_2m,dpmpp_3m,dpmpp_2m_sde,unipc,unipc_3,euler,euler_a,heun',
  'Samplers.',
)
flags.DEFINE_integer('num', 500, 'Samples per cell (50 of each class).')
flags.DEFINE_float('guidance_scale', None, 'Default: config.sampling.guidance_scale.')
flags.DEFINE_bool('markdown', False, 'Print the table of --out and exit.')
FLAGS = flags.FLAGS


def steps_for(sampler: str, evals: int) -> int:
  """The most steps whose model calls are at most ``evals`` (PLMS: one more for its warm-up;
  Heun: 2S - 1; DDIM/PLMS: a step count the reference's grid can take)."""
  from ldm_jax.diffusion.samplers import model_calls

  best = 1
  for steps in range(1, evals + 1):
    try:
      if model_calls(sampler, steps) <= evals:
        best = steps
    except ValueError:  # the grid would pass the last timestep
      continue
  return best


def held_out_features():
  import numpy as np

  from ldm_jax.data import digits_uint8
  from ldm_jax.eval.digits import features

  images, _ = digits_uint8(32)
  order = np.random.default_rng(0).permutation(len(images))  # train_classifier's split
  return features(images[order[int(0.8 * len(images)) :]])


def real_floor() -> float:
  """The distance of the classifier's training digits (the other 80%) to the held-out ones: what
  a perfect sampler of the training data would score."""
  import numpy as np

  from ldm_jax.data import digits_uint8
  from ldm_jax.eval.digits import features
  from ldm_jax.eval.fid import feature_stats, frechet_distance

  images, _ = digits_uint8(32)
  order = np.random.default_rng(0).permutation(len(images))
  train = feature_stats(features(images[order[: int(0.8 * len(images))]]))
  return float(frechet_distance(*train, *feature_stats(held_out_features())))


def markdown(rows) -> str:
  samplers = list(dict.fromkeys(r['sampler'] for r in rows))
  evals = sorted({r['evals'] for r in rows})
  cell = {(r['sampler'], r['evals']): r for r in rows}
  head = '| sampler | ' + ' | '.join(f'{e} calls' for e in evals) + ' |'
  lines = [head, '|---' * (len(evals) + 1) + '|']
  for s in samplers:
    vals = []
    for e in evals:
      r = cell.get((s, e))
      calls = f' ({r["model_calls"]})' if r and r['model_calls'] != e else ''
      vals.append(f'{r["class_accuracy"]:.1%} / {r["feature_fd"]:.2f}{calls}' if r else '')
    lines.append(f'| {s} | ' + ' | '.join(vals) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  rows = []
  if os.path.exists(FLAGS.out):
    rows = [json.loads(line) for line in open(FLAGS.out) if line.strip()]
  if FLAGS.markdown:
    print(markdown(rows))
    print(f'\nreal training digits vs held-out: {real_floor():.2f}')
    return
  import numpy as np

  import ldm_jax
  from ldm_jax.diffusion.samplers import model_calls
  from ldm_jax.eval.digits import features, train_classifier
  from ldm_jax.eval.fid import feature_stats, frechet_distance

  pipe = ldm_jax.load(FLAGS.workdir)
  clf, _ = train_classifier()
  mu_r, sig_r = feature_stats(held_out_features())
  scale = FLAGS.guidance_scale or pipe.config.sampling.guidance_scale
  done = {(r['sampler'], r['evals']) for r in rows}
  for sampler in FLAGS.samplers:
    for evals in map(int, FLAGS.evals):
      if (sampler, evals) in done:
        continue
      steps = steps_for(sampler, evals)
      t0 = time.time()
      images = pipe.sample(
        FLAGS.num,
        sampler=sampler,
        steps=steps,
        class_label='all',
        guidance_scale=scale,
        batch_size=100,
        seed=0,
      )
      labels = np.arange(FLAGS.num) % pipe.num_classes
      f = features(images)
      mu, sig = feature_stats(f)
      row = {
        'workdir': FLAGS.workdir,
        'step': pipe.step,
        'sampler': sampler,
        'steps': steps,
        'evals': evals,
        'model_calls': model_calls(sampler, steps),
        'guidance_scale': scale,
        'num': FLAGS.num,
        'class_accuracy': float(np.mean(clf.predict(f) == labels)),
        'feature_fd': float(frechet_distance(mu, sig, mu_r, sig_r)),
        'seconds': round(time.time() - t0, 1),
        'date': time.strftime('%Y-%m-%d'),
      }
      print(json.dumps(row), flush=True)
      with open(FLAGS.out, 'a') as fh:
        fh.write(json.dumps(row) + '\n')
      rows.append(row)
  print(markdown(rows))


if __name__ == '__main__':
  app.run(main)
