"""Class adherence of generated digits, judged by a classifier trained on real digits only.

  python -m ldm_jax.eval.digits --samples=runs/digits/samples/samples.npz
  python sample.py --workdir=runs/digits/text --prompt='a handwritten digit seven' --outdir=out7
  python -m ldm_jax.eval.digits --samples=out7/samples.npz   # labelled by the prompt

Class samples carry their labels; text samples are labelled by the digit their prompt names (from
sampling.json beside samples.npz, or --prompt): its word ('seven') or numeral ('7').

The classifier (an RBF SVM, scikit-learn) sees 8x8 grey images: generated 32x32 samples are
block-averaged back to 8x8, and it is trained on the real digits passed through the same
32x32 upscale + 8x8 block average. It never sees a generated image.
"""

from __future__ import annotations

import json

import numpy as np
from absl import flags

from ldm_jax import storage
from ldm_jax.data import digits_uint8

FLAGS = flags.FLAGS


def _define_flags() -> None:  # only when run: tests and scripts import this module
  flags.DEFINE_string('samples', None, 'samples.npz written by sample.py (images, labels).')
  flags.DEFINE_string('prompt', None, 'Label the samples by the digit this prompt names.')


def features(images_uint8: np.ndarray) -> np.ndarray:
  """[N, 32, 32, 3] uint8 -> [N, 64]: grey, 4x4 block mean, scaled to the digits' 0..16 range."""
  grey = images_uint8.astype(np.float32).mean(axis=-1)
  n, h, w = grey.shape
  small = grey.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4))
  return small.reshape(n, 64) * (16.0 / 255.0)


def train_classifier(seed: int = 0):
  """Fit on 80% of the real digits; returns (classifier, accuracy on the other 20%)."""
  from sklearn.svm import SVC

  images, labels = digits_uint8(32)
  order = np.random.default_rng(seed).permutation(len(labels))
  cut = int(0.8 * len(labels))
  train, held = order[:cut], order[cut:]
  clf = SVC(gamma='scale', C=10.0).fit(features(images[train]), labels[train])
  return clf, float(np.mean(clf.predict(features(images[held])) == labels[held]))


def digit_of_prompt(prompt: str) -> int:
  """The one digit a prompt names, by word or numeral; a UserError otherwise."""
  import re

  from ldm_jax.data.sources import DIGIT_NAMES
  from ldm_jax.errors import UserError

  words = re.findall(r'[a-z]+|\d', prompt.lower())
  found = {DIGIT_NAMES.index(w) for w in words if w in DIGIT_NAMES}
  found |= {int(w) for w in words if w.isdigit()}
  if len(found) != 1:
    raise UserError(f'the prompt {prompt!r} names {len(found)} digits; one is needed as the label')
  return found.pop()


def _labels(data, path: str, prompt: str | None) -> np.ndarray:
  """The samples' labels: stored (class models), or the digit of the prompt they were drawn with."""
  n = len(data['images'])
  if prompt is None and 'labels' in data:
    return np.asarray(data['labels'])
  if prompt is None:
    info = str(storage.Path(path).parent / 'sampling.json')
    if storage.exists(info):
      prompt = json.loads(storage.read_text(info)).get('prompt')
  if prompt is None:
    from ldm_jax.errors import UserError

    raise UserError(
      f'{path} has no labels and no sampling.json with a prompt beside it: pass --prompt'
    )
  return np.full(n, digit_of_prompt(prompt))


def class_accuracy(images_uint8: np.ndarray, labels: np.ndarray, clf=None) -> float:
  clf = clf or train_classifier()[0]
  return float(np.mean(clf.predict(features(images_uint8)) == labels))


def main(argv):
  del argv
  data = storage.load_npz(FLAGS.samples)
  clf, held_out = train_classifier()
  labels = _labels(data, FLAGS.samples, FLAGS.prompt)
  pred = clf.predict(features(data['images']))
  acc = float(np.mean(pred == labels))
  per_class = {int(c): float(np.mean(pred[labels == c] == c)) for c in np.unique(labels)}
  print(
    json.dumps(
      {
        'classifier_accuracy_on_held_out_real_digits': round(held_out, 4),
        'samples': int(len(pred)),
        'class_accuracy_of_samples': round(acc, 4),
        'per_class': per_class,
      }
    )
  )
  print(
    f'A classifier trained on real digits ({held_out:.1%} on held-out real digits) assigns the '
    f'requested class to {acc:.1%} of {len(pred)} generated samples.'
  )


if __name__ == '__main__':
  _define_flags()
  flags.mark_flags_as_required(['samples'])
  from ldm_jax.runtime import run_cli

  run_cli(main)
