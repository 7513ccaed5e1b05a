"""Sampling every task of the paper with sample.py and the Python API, from converted random-weight
CompVis checkpoints (tiny models shaped like the released one of each task): unconditional, class
(+ guidance with the null class), text (+ guidance with the empty prompt, a larger canvas),
super-resolution, inpainting (composited), layout and semantic synthesis, each with a fast solver."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import ldm_jax
from ldm_jax import tasks
from ldm_jax.convert import compvis as convert
from ldm_jax.tasks import layout_tokens as layout
from tests.helpers import TASKS, compvis_ldm_state_dict, run_cli, tiny_task_config

ENV = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
# Every fast solver on some task (the reference's DDIM runs them all elsewhere): guidance (class,
# text), a larger canvas (unconditional, text), every conditioning kind.
SOLVER = {
  'unconditional': 'dpmpp_2m',
  'class': 'dpmpp_2m_sde',
  'text': 'unipc',
  'layout': 'euler_a',
  'superres': 'heun',
  'inpainting': 'dpmpp_3m',
  'semantic': 'euler',
}


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp('inputs')
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / 'lr.png')
  Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / 'lr2.png')
  Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / 'image.png')
  mask = np.zeros((16, 16), np.uint8)
  mask[4:12, 2:10] = 255
  Image.fromarray(mask).save(d / 'mask.png')
  Image.fromarray(255 - mask).save(d / 'mask2.png')
  Image.fromarray(rng.integers(0, 5, (16, 16), dtype=np.uint8)).save(d / 'seg.png')
  Image.fromarray(rng.integers(0, 5, (16, 16), dtype=np.uint8)).save(d / 'seg2.png')
  (d / 'layout.json').write_text(
    json.dumps(
      [{'class': 3, 'bbox': [0.1, 0.2, 0.5, 0.4]}, {'class': 7, 'bbox': [0.5, 0.5, 0.5, 0.5]}]
    )
  )
  (d / 'layout2.json').write_text(json.dumps([{'class': 100, 'bbox': [0.0, 0.0, 1.0, 0.3]}]))
  return d


def task_args(task, d, other=False):
  """(sample.py flags, API keyword arguments) of a task; ``other``: a different condition."""
  s = '2' if other else ''
  args = {
    'unconditional': {},
    'class': {'class_label': '4' if other else '2', 'guidance_scale': 3.0},
    'text': {
      'prompt': 'a watercolor of a fox' if other else 'a red cube on a table',
      'guidance_scale': 5.0,
    },
    'layout': {'layout': str(d / f'layout{s}.json')},
    'superres': {'lr_image': str(d / f'lr{s}.png')},
    'inpainting': {'image': str(d / 'image.png'), 'mask': str(d / f'mask{s}.png')},
    'semantic': {'segmentation': str(d / f'seg{s}.png')},
  }[task]
  if task in ('unconditional', 'text'):
    args.update(height=16, width=24)  # a larger canvas than the 16x16 training size
  flags = [f'--{k}={v}' for k, v in args.items()]
  return flags, args


def converted_workdir(task, root):
  """A random-weight CompVis state dict of the task's tiny model, saved as safetensors and
  converted with the CompVis converter into a workdir."""
  from safetensors.numpy import save_file

  config = tiny_task_config(task)
  sd = compvis_ldm_state_dict(config, seed=1, scale_factor=0.8)
  path = os.path.join(root, f'{task}.safetensors')
  save_file(sd, path)
  workdir = os.path.join(root, task)
  report = convert.convert_compvis(path, config, workdir)
  assert report['used'] + len(report['ignored']) == len(sd)
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('task', TASKS)
def test_sample_every_task_from_converted_weights(task, inputs, tmp_path):
  workdir = converted_workdir(task, str(tmp_path))
  flags, kwargs = task_args(task, inputs)
  out = str(tmp_path / 'out')
  r = run_cli(
    'sample.py',
    f'--workdir={workdir}',
    '--num_samples=2',
    '--steps=4',
    '--seed=3',
    f'--sampler={SOLVER[task]}',
    f'--outdir={out}',
    *flags,
    env=ENV,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  images = np.load(os.path.join(out, 'samples.npz'))['images']
  h, w = {'unconditional': (16, 24), 'text': (16, 24)}.get(task, (16, 16))
  assert images.shape == (2, h, w, 3) and images.dtype == np.uint8
  assert os.path.exists(os.path.join(out, 'grid.png')) and os.path.exists(
    os.path.join(out, '000001.png')
  )
  assert images.std() > 1  # not a constant image

  # The API gives the same images for the same seed; another condition gives other images.
  pipe = ldm_jax.load(workdir)
  assert float(pipe.scale_factor) == pytest.approx(0.8)
  api = pipe.sample(2, steps=4, seed=3, sampler=SOLVER[task], **kwargs)
  assert np.abs(api.astype(int) - images).max() <= 1
  _, other_kwargs = task_args(task, inputs, other=True)
  seed = 3 if task != 'unconditional' else 4
  other = pipe.sample(2, steps=4, seed=seed, sampler=SOLVER[task], **other_kwargs)
  assert np.abs(other.astype(int) - api).mean() > 1, 'the condition does not change the output'

  if task == 'inpainting':  # outside the mask: the input image, as the reference composites
    image = np.asarray(Image.open(inputs / 'image.png'))
    keep = np.asarray(Image.open(inputs / 'mask.png')) < 128
    assert np.abs(api[:, keep].astype(int) - image[keep]).max() <= 1
    assert np.abs(api[:, ~keep].astype(int) - image[~keep]).mean() > 1
  if task == 'class':
    assert list(np.load(os.path.join(out, 'samples.npz'))['labels']) == [2, 2]


@pytest.mark.slow
def test_task_input_errors_name_the_fix(inputs, tmp_path):
  pipe = ldm_jax.load(converted_workdir('superres', str(tmp_path)))
  with pytest.raises(tasks.TaskInputError, match='takes --lr_image; got --prompt'):
    pipe.sample(1, prompt='a cat', lr_image=str(inputs / 'lr.png'))
  with pytest.raises(tasks.TaskInputError, match='missing --lr_image'):
    pipe.sample(1)
  with pytest.raises(tasks.TaskInputError, match='leave --height/--width unset'):
    pipe.sample(1, lr_image=str(inputs / 'lr.png'), height=32, width=32)
  with pytest.raises(tasks.TaskInputError, match='cross-attention'):
    pipe.sample(1, lr_image=str(inputs / 'lr.png'), guidance_scale=2.0)
  with pytest.raises(tasks.TaskInputError, match='cannot read image'):
    pipe.sample(1, lr_image=str(tmp_path / 'missing.png'))
  r = run_cli('sample.py', f'--workdir={tmp_path / "superres"}', '--prompt=x', env=ENV)
  assert r.returncode == 2 and 'takes --lr_image' in r.stderr


def test_inpainting_condition_matches_the_reference_script(inputs):
  task = tasks.get_task(tiny_task_config('inpainting'))
  cond, canvas, composite = task.user_condition(
    2, str(inputs / 'image.png'), str(inputs / 'mask.png')
  )
  raw = np.asarray(Image.open(inputs / 'image.png')).astype(np.float32) / 255
  m = (np.asarray(Image.open(inputs / 'mask.png')).astype(np.float32) / 255 >= 0.5)[..., None]
  np.testing.assert_allclose(cond['masked_image'][1], (1 - m) * raw * 2 - 1, atol=1e-6)
  np.testing.assert_array_equal(cond['mask'][0], m * 2.0 - 1)
  assert set(np.unique(cond['mask'])) == {-1.0, 1.0} and tuple(canvas) == (16, 16)
  samples = np.ones((2, 16, 16, 3), np.float32)  # the composite keeps the known pixels
  np.testing.assert_allclose(composite(samples)[1], np.where(m, 1.0, raw * 2 - 1), atol=1e-6)
  with pytest.raises(tasks.TaskInputError, match='same size'):
    task.user_condition(1, str(inputs / 'image.png'), np.zeros((8, 8), np.uint8))


def test_nearest_resize_matches_torch():
  torch = pytest.importorskip('torch')
  from ldm_jax.images import resize_nearest_torch

  x = np.random.default_rng(0).normal(size=(2, 12, 20, 1)).astype(np.float32)
  for size in ((4, 5), (6, 10), (5, 7)):
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size)
    np.testing.assert_array_equal(
      np.asarray(resize_nearest_torch(x, size)), ref.permute(0, 2, 3, 1).numpy()
    )


def test_layout_tokens_follow_taming_bbox_builder():
  # 8192 tokens -> a 90x90 grid; corner (x, y) -> round(89 y) * 90 + round(89 x).
  tokens = layout.tokenize_layout([{'class': 12, 'bbox': [0.25, 0.5, 0.5, 0.25]}])
  assert tokens.shape == (92,) and tokens.dtype == np.int32
  assert list(tokens[:3]) == [12, 44 * 90 + 22, 67 * 90 + 67]
  assert set(tokens[3:90]) == {8191}  # "none" triples
  assert list(tokens[90:]) == [0, 89 * 90 + 89]  # the full crop
  assert list(layout.empty_layout(92)[:90]) == [8191] * 90
  with pytest.raises(ValueError, match='at most 30 objects'):
    layout.tokenize_layout([{'class': 1, 'bbox': [0, 0, 0.1, 0.1]}] * 31)
  with pytest.raises(ValueError, match='must look like'):
    layout.tokenize_layout([{'label': 1}])


def test_segmentation_is_one_hot(inputs):
  task = tasks.get_task(tiny_task_config('semantic'))
  seg, _, _ = task.user_condition(3, str(inputs / 'seg.png'))
  labels = np.asarray(Image.open(inputs / 'seg.png'))
  assert seg.shape == (3, 16, 16, 11)
  np.testing.assert_array_equal(seg[2].argmax(-1), labels)
  np.testing.assert_array_equal(seg.sum(-1), 1)
  with pytest.raises(tasks.TaskInputError, match='classes must be in 0..10'):
    task.user_condition(1, np.full((4, 4), 12))
