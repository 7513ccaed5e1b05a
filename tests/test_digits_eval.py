"""python -m ldm_jax.eval.digits judges text samples by the digit their prompt names."""

import json

import numpy as np
import pytest

from ldm_jax.data import digits_uint8
from ldm_jax.errors import UserError
from ldm_jax.eval.digits import digit_of_prompt
from tests.helpers import run_cli


def test_digit_of_prompt():
  assert digit_of_prompt('a handwritten digit seven') == 7
  assert digit_of_prompt('digit 7') == 7
  assert digit_of_prompt('The number ZERO, written by hand') == 0
  for bad in ('a handwritten digit', 'digit 7 or eight', 'someone'):
    with pytest.raises(UserError, match='names'):
      digit_of_prompt(bad)


def test_cli_labels_samples_by_their_prompt(tmp_path):
  images, labels = digits_uint8(32)
  sevens, ones = images[labels == 7][:20], images[labels == 1][:20]
  np.savez(tmp_path / 'samples.npz', images=np.concatenate([sevens, ones]))
  (tmp_path / 'sampling.json').write_text(json.dumps({'prompt': 'a handwritten digit seven'}))
  r = run_cli('-m', 'ldm_jax.eval.digits', f'--samples={tmp_path / "samples.npz"}')
  assert r.returncode == 0, r.stderr[-2000:]
  out = json.loads(r.stdout.splitlines()[0])
  assert out['per_class'].keys() == {'7'}  # every sample labelled by the prompt's digit
  assert 0.4 <= out['class_accuracy_of_samples'] <= 0.55  # the sevens, not the ones
  r = run_cli(
    '-m', 'ldm_jax.eval.digits', f'--samples={tmp_path / "samples.npz"}', '--prompt=digit 1'
  )
  assert json.loads(r.stdout.splitlines()[0])['per_class'].keys() == {'1'}
