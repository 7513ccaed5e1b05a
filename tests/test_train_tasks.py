"""Training every conditional task: the tiny variant of each task (tests/helpers.tiny_task_config,
shaped like the released model) trains a few steps on the embedded digits with the conditions the
data pipeline makes (captions, boxes, degraded images, masks, class maps), checkpoints, and samples
with a condition through ldm_jax.load. Each run fine-tunes a converted random-weight CompVis
checkpoint of the task (as a user fine-tunes released weights): a fresh initialisation costs ~30 s
of XLA compilation on a CPU and is covered by test_train_e2e."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

import ldm_jax
from ldm_jax.data import make_train_iterator
from ldm_jax.data.sources import DigitsSource
from ldm_jax.tasks import get_task
from ldm_jax.train.loop import train
from tests.helpers import tiny_task_config
from tests.test_tasks import converted_workdir

CONDITIONAL = ('class', 'text', 'layout', 'superres', 'inpainting', 'semantic')


def task_config(task, first_stage, **training):
  c = tiny_task_config(task)
  c.first_stage.checkpoint = first_stage
  if task in ('class', 'text'):
    c.cond_stage.p_uncond = 0.2  # condition dropout (classifier-free guidance training)
  c.training.update(dict(num_steps=3, checkpoint_every=3, log_every=3, sample_every=0))
  c.training.update(training)
  c.sampling.steps = 4
  return c


def digit_condition(task, config, index=1500):
  """The condition of a held-out digit, as a user would pass it to sample()."""
  example = DigitsSource(16, 'all').load(index)
  if task == 'class':
    return {'class_label': example['label'], 'guidance_scale': 3.0}
  if task == 'text':
    return {'prompt': example['caption'][0], 'guidance_scale': 3.0}
  if task == 'layout':
    return {'layout': example['boxes']}
  if task == 'superres':
    return {'lr_image': get_task(config).training_condition([example], [0])[0] * 0.5 + 0.5}
  if task == 'inpainting':
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    return {'image': example['image'], 'mask': mask}
  return {'segmentation': example['segmentation']}


@pytest.mark.parametrize('task', CONDITIONAL)
def test_task_trains_checkpoints_and_samples(task, tmp_path):
  workdir = converted_workdir(task, str(tmp_path))
  config = task_config(task, workdir)
  state = train(config, workdir)  # resumes the converted step 0, which has no optimizer state
  assert int(state.step) == 3 and jax.tree.leaves(state.opt_state)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '3'))

  pipe = ldm_jax.load(workdir)
  assert pipe.step == 3
  cond = digit_condition(task, config)
  images = pipe.sample(2, steps=4, seed=1, **cond)
  size = 16
  assert images.shape == (2, size, size, 3) and images.dtype == np.uint8
  assert images.std() > 1
  if task == 'inpainting':  # the known pixels are kept exactly, the hole is generated
    keep = cond['mask'] < 128
    assert np.abs(images[:, keep].astype(int) - cond['image'][keep]).max() <= 1
    assert np.abs(images[:, ~keep].astype(int) - cond['image'][~keep]).mean() > 1
  if task in ('inpainting', 'text', 'layout', 'semantic'):  # the paper's protocols
    from ldm_jax.eval.conditional import evaluate

    clip = ''
    if task == 'text':  # with the CLIP score of a (random, tiny) converted CLIPModel
      from ldm_jax.convert.clip_text import convert_clip_text
      from tests.test_clip import tiny_clip_folder

      tiny_clip_folder(str(tmp_path / 'clip_torch'))
      convert_clip_text(str(tmp_path / 'clip_torch'), clip := str(tmp_path / 'clip'))
    report = evaluate(pipe, 'test', 10, steps=2, batch_size=8, seed=3, clip=clip)
    assert report['num_samples'] == 10 and report['split'] == 'test' and report['steps'] == 2
    assert np.isfinite(report['fid']) and report['fid'] > 0 and 0 <= report['precision'] <= 1
    if task == 'text':
      assert 0 <= report['clip_score'] <= 100 and report['clip'] == clip
      assert report['guidance_scale'] == pipe.config.sampling.guidance_scale > 1
      # captions from a JSON-lines list of images and captions (data_overrides: any source, e.g.
      # TFDS coco_captions as Table 2 reads them; test_data reads its captions from mock data)
      rows = []
      for i in range(8):
        example = DigitsSource(16, 'test').load(i)
        Image.fromarray(example['image']).save(tmp_path / f'{i}.png')
        rows.append(f'{{"image": "{i}.png", "caption": "{example["caption"][0]}"}}')
      (tmp_path / 'captions.jsonl').write_text('\n'.join(rows))
      listed = evaluate(pipe, 'all', 8, steps=2, batch_size=8,
                        data_overrides={'source': 'jsonl', 'path': str(tmp_path / 'captions.jsonl')})  # fmt: skip
      assert listed['num_samples'] == 8 and listed['source'] == 'jsonl'
    if task == 'inpainting':
      assert 0 < report['lpips'] < 1 and 0 < report['masked_fraction_mean'] < 1
      assert sum(b['num_samples'] for b in report['bands']) == 10
      assert any('fid' in b for b in report['bands'])
      # a folder of masks: the top half of every image, 50% masked
      os.makedirs(tmp_path / 'masks')
      half = np.zeros((32, 32), np.uint8)
      half[:16] = 255
      Image.fromarray(half).save(tmp_path / 'masks' / 'a.png')
      own = evaluate(pipe, 'test', 8, steps=2, batch_size=8, masks=str(tmp_path / 'masks'))
      assert own['masked_fraction_mean'] == 0.5 and own['masks'] == str(tmp_path / 'masks')
      assert [b['num_samples'] for b in own['bands'] if b['masked'] == [0.5, 1.0]] == [8]
  if task == 'superres':  # f x the input's size (2 for the tiny first stage, 4 for bsr_sr)
    assert cond['lr_image'].shape[:2] == (size // pipe.downsampling,) * 2
    from ldm_jax.eval.superres import evaluate

    report = evaluate(pipe, 'test', num_images=8, steps=4, batch_size=8, fid=True)
    assert report['images'] == 8 and report['factor'] == 2
    assert report['psnr_bicubic_consistency'] > 25  # the baseline's round trip is close
    assert np.isfinite(report['psnr_consistency']) and np.isfinite(report['psnr_to_original'])
    assert -1 <= report['ssim'] <= 1 and report['bicubic_ssim'] > 0.5
    assert np.isfinite(report['fid']) and report['inception_score'] is None
    # A larger input than the training size, denoised and decoded in overlapping tiles.
    big = np.random.default_rng(0).integers(0, 256, (12, 20, 3), np.uint8)
    tiled = pipe.sample(1, lr_image=big, steps=4, tile=8, tile_stride=4)
    assert tiled.shape == (1, 24, 40, 3) and tiled.std() > 1


def test_training_grid_shows_condition_sample_and_original(tmp_path):
  """Inpainting run with sample grids: each row = masked input | composited sample | original."""
  workdir = converted_workdir('inpainting', str(tmp_path))
  config = task_config('inpainting', workdir, sample_every=3, num_sample_images=8)
  train(config, workdir)
  grid = np.asarray(Image.open(os.path.join(workdir, 'images', 'samples_0000003.png')))
  pad = 2  # make_grid's padding
  assert grid.shape[1] == 3 * 16 + 4 * pad and grid.shape[0] == 8 * 16 + 9 * pad
  tile = lambda r, col: grid[
    pad + r * (16 + pad) : pad + r * (16 + pad) + 16,
    pad + col * (16 + pad) : pad + col * (16 + pad) + 16,
  ].astype(int)
  for r in range(8):
    masked, sample, original = tile(r, 0), tile(r, 1), tile(r, 2)
    known = np.abs(masked - 128).max(-1) > 1  # the hole is drawn mid-grey
    assert np.abs(sample[known] - original[known]).max() <= 1


def test_condition_dropout_uses_the_null_condition():
  from ldm_jax.train.ldm_step import drop_condition

  tokens = np.arange(4000 * 5, dtype=np.int32).reshape(4000, 5) + 10
  null = np.array([101, 102, 0, 0, 0], np.int32)
  out = np.asarray(
    drop_condition(jax.random.uniform(jax.random.PRNGKey(0), (4000,)) < 0.1, tokens, null)
  )
  dropped = (out == null).all(-1)
  assert 0.08 < dropped.mean() < 0.12
  np.testing.assert_array_equal(out[~dropped], tokens[~dropped])
  labels = np.arange(1000, dtype=np.int32) % 10
  out = np.asarray(
    drop_condition(jax.random.uniform(jax.random.PRNGKey(1), (1000,)) < 0.5, labels, np.int32(10))
  )
  assert set(np.unique(out)) <= set(range(11)) and 0.4 < (out == 10).mean() < 0.6


@pytest.mark.parametrize('task', CONDITIONAL)
def test_conditions_are_deterministic_per_step_and_shaped(task):
  config = tiny_task_config(task)
  task_obj = get_task(config)
  a = make_train_iterator(config, task=task_obj, start_step=5, prefetch=0)
  b = make_train_iterator(config, task=task_obj, start_step=0, prefetch=0)
  for _ in range(5):
    next(b)
  ba, bb = next(a), next(b)
  jax.tree.map(np.testing.assert_array_equal, ba['cond'], bb['cond'])  # resume-exact
  cond, labels, n = ba['cond'], ba['label'], config.training.batch_size
  if task == 'class':
    np.testing.assert_array_equal(cond, labels)
  elif task == 'text':
    assert cond.shape == (n, 77) and (cond[:, 0] == 101).all()  # [CLS]
    from ldm_jax.data.sources import DIGIT_NAMES

    texts = task_obj.tokenizer.batch_decode(cond.tolist(), skip_special_tokens=True)
    for text, label in zip(texts, labels):
      assert DIGIT_NAMES[label] in text or f'digit {label}' in text
  elif task == 'layout':
    from ldm_jax.tasks.layout_tokens import detokenize_layout

    assert cond.shape == (n, 92)
    for tokens, label, image in zip(cond, labels, ba['image']):
      (obj,) = detokenize_layout(tokens)
      assert obj['class'] == label
      x, y, w, h = obj['bbox']
      ink = np.argwhere(image[..., 0] > 0)  # [-1, 1] images: ink >= 128 is > 0
      assert abs(ink[:, 1].min() / 16 - x) < 0.05 and abs(ink[:, 0].min() / 16 - y) < 0.05
  elif task == 'superres':
    assert cond.shape == (n, 8, 8, 3)
    down = ba['image'].reshape(n, 8, 2, 8, 2, 3).mean((2, 4))
    assert np.abs(cond - down).mean() < 0.1  # bicubic ~ the box average
  elif task == 'inpainting':
    m = cond['mask'] > 0
    assert cond['mask'].shape == (n, 16, 16, 1) and m.any() and not m.all()
    np.testing.assert_allclose(np.where(m, -1.0, ba['image']), cond['masked_image'], atol=1e-5)
  else:
    assert cond.shape == (n, 16, 16) and cond.dtype == np.int32
    np.testing.assert_array_equal(cond > 0, ba['image'][..., 0] > 0)
    np.testing.assert_array_equal(
      cond[cond > 0], np.broadcast_to(labels[:, None, None] + 1, cond.shape)[cond > 0]
    )
