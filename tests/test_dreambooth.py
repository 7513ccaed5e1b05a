"""DreamBooth (config.dreambooth, configs/dreambooth.py) on the tiny SDXL converted from diffusers:
the class images drawn by the base model before training (resumable, the base's own samples), the
instance and class examples interleaved with their prompts and loss weights, and a LoRA run that
trains on them."""

import os

import jax
import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('diffusers')

import ldm_jax  # noqa: E402
from ldm_jax.configs import dreambooth  # noqa: E402
from ldm_jax.convert.diffusers import convert_diffusers  # noqa: E402
from tests.test_sdxl import _sdxl_pipeline  # noqa: E402


def _instance_folder(root, n=3):
  from PIL import Image

  os.makedirs(root)
  rng = np.random.default_rng(0)
  for i in range(n):
    image = np.zeros((16, 16, 3), np.uint8) + rng.integers(0, 255, 3, dtype=np.uint8)
    image[4:12, 4:12] = 255 - image[4:12, 4:12]  # a square "subject"
    Image.fromarray(image).save(os.path.join(root, f'sks_{i}.png'))
  return str(root)


def test_dreambooth_prior_preservation_trains(tmp_path):
  from ldm_jax.data import make_train_iterator
  from ldm_jax.tasks import get_task
  from ldm_jax.train.dreambooth import prepare_class_images
  from ldm_jax.train.loop import train

  _sdxl_pipeline(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'base'))
  c = dreambooth.get_config('tiny_sdxl')
  c.training.init_from = str(tmp_path / 'base')
  c.data.path = _instance_folder(tmp_path / 'instance')
  c.dreambooth.update(dict(instance_prompt='a photo of sks square', class_prompt='a photo of a square',
                           num_class_images=4, prior_loss_weight=0.5))  # fmt: skip
  c.training.num_steps = 2
  wd = str(tmp_path / 'run')
  train(c, wd)
  classes = os.path.join(wd, 'class_images')
  assert sorted(os.listdir(classes)) == [f'{i:06d}.png' for i in range(4)]
  assert c.dreambooth.class_dir == classes

  # the class images are the base model's samples of the class prompt (seed = config.seed)
  from PIL import Image

  drawn = np.stack(
    [np.asarray(Image.open(os.path.join(classes, f'{i:06d}.png'))) for i in range(4)]
  )
  base = ldm_jax.load(str(tmp_path / 'base'), seed=c.seed)
  want = base.sample(4, prompt='a photo of a square', height=16, width=16, seed=c.seed)
  np.testing.assert_array_equal(drawn, want)
  # a relaunch draws only what is missing, the same images
  before = open(os.path.join(classes, '000003.png'), 'rb').read()
  for i in (2, 3):
    os.remove(os.path.join(classes, f'{i:06d}.png'))
  prepare_class_images(c, wd)
  assert open(os.path.join(classes, '000003.png'), 'rb').read() == before

  # the data: instance and class by turns, with their prompts and weights 2 and 2 x 0.5
  task = get_task(c)
  batch = next(iter(make_train_iterator(c, task=task, prefetch=0)))
  weights = sorted(set(np.asarray(batch['loss_weight']).tolist()))
  assert weights == [1.0, 2.0] and len(batch['loss_weight']) == c.training.batch_size
  instance_tokens = task.tokenize(['a photo of sks square'])[0]
  class_tokens = task.tokenize(['a photo of a square'])[0]
  for w, tokens in zip(batch['loss_weight'], batch['cond']['tokens']):
    np.testing.assert_array_equal(tokens, instance_tokens if w == 2.0 else class_tokens)

  # the run trained adapters on them
  from ldm_jax.checkpoint import load_raw

  _, step, state, _ = load_raw(wd)
  assert step == 2
  moved = [float(np.abs(x).max()) for x in jax.tree.leaves(state['params'])]
  assert max(moved) > 0
  images = ldm_jax.load(wd).sample(2, prompt='a photo of sks square', height=16, width=16)
  assert images.shape == (2, 16, 16, 3)
