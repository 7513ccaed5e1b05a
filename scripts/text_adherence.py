"""Prompt adherence of a digits text-to-image run (issue 25's measurement): samples N per digit for
each prompt phrasing and judges them with the real-digit classifier of ``ldm_jax.eval.digits``.
With --layout, a digits layout-to-image run: each sample's layout is the box of a held-out digit
(the test split) with that digit as its class; the drawn digit should be the box's class.

  python scripts/text_adherence.py --workdir=runs/digits/text [--per_digit=10 --guidance_scale=3]
  python scripts/text_adherence.py --workdir=runs/digits/layout --layout --guidance_scale=1

Prints one JSON line: accuracy per phrasing (or for the layouts) and per digit, and overall.
"""

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string('workdir', None, 'A digits text run.')
flags.DEFINE_integer('per_digit', 10, 'Samples per digit and phrasing.')
flags.DEFINE_float('guidance_scale', 3.0, 'Classifier-free guidance.')
flags.DEFINE_string('sampler', 'ddim', 'Sampler.')
flags.DEFINE_integer('steps', 50, 'Sampler steps.')
flags.DEFINE_bool('layout', False, 'A layout-to-image run: boxes of held-out digits.')
flags.DEFINE_list(
  'phrasings',
  ['a handwritten digit {name}', 'digit {digit}'],
  'Prompt templates ({name}, {digit}).',
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import numpy as np

  import ldm_jax
  from ldm_jax.data.sources import DIGIT_NAMES
  from ldm_jax.eval.digits import features, train_classifier

  pipe = ldm_jax.load(FLAGS.workdir)
  clf, _ = train_classifier()
  out = {'workdir': FLAGS.workdir, 'step': pipe.step, 'guidance_scale': FLAGS.guidance_scale}
  runs = {}  # name -> (the condition's keyword, one per sample; the digit of each)
  if FLAGS.layout:
    import tempfile

    from ldm_jax.data.sources import DigitsSource

    test = DigitsSource(pipe.config.data.image_size, 'test')
    layouts, labels = [], []
    for d in range(10):
      idx = [i for i in range(len(test)) if test.labels[i] == d][: FLAGS.per_digit]
      layouts += [test.load(i)['boxes'] for i in idx]
      labels += [d] * len(idx)
    path = os.path.join(tempfile.mkdtemp(), 'layouts.json')  # one layout per sample
    with open(path, 'w') as f:
      json.dump(layouts, f)
    runs['layout'] = ({'layout': path}, labels)
  else:
    for phr in FLAGS.phrasings:
      prompts = [phr.format(name=DIGIT_NAMES[d], digit=d) for d in range(10)]
      runs[phr] = ({'prompt': [p for p in prompts for _ in range(FLAGS.per_digit)]},
                   [d for d in range(10) for _ in range(FLAGS.per_digit)])  # fmt: skip
  for name, (condition, labels) in runs.items():
    images = pipe.sample(
      len(labels),
      guidance_scale=FLAGS.guidance_scale,
      sampler=FLAGS.sampler,
      steps=FLAGS.steps,
      batch_size=100,
      seed=1,
      **condition,
    )
    pred, labels = clf.predict(features(images)), np.asarray(labels)
    per = [float(np.mean(pred[labels == d] == d)) for d in range(10)]
    out[name] = {'accuracy': float(np.mean(pred == labels)), 'per_digit': per, 'min': min(per)}
  out['overall'] = float(np.mean([out[name]['accuracy'] for name in runs]))
  print(json.dumps(out))


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
