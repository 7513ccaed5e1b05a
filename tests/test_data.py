"""Data sources: digits, folders (errors, corrupt files), TFDS (mock), determinism and resume."""

import os

import numpy as np
import pytest
from PIL import Image

from ldm_jax.data import DataError, RandomAccessBatches, digits_uint8, make_source
from ldm_jax.data.sources import DigitsSource, FolderSource
from tests.helpers import tiny_autoencoder_config


def write_images(root, n, size=(40, 30), sub=''):
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, sub), exist_ok=True)
  for i in range(n):
    img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ext = ['png', 'jpg', 'webp'][i % 3]
    Image.fromarray(img).save(os.path.join(root, sub, f'img{i}.{ext}'))


def test_digits_are_real_labelled_images():
  images, labels = digits_uint8(32)
  assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
  assert set(labels.tolist()) == set(range(10)) and images.max() > 200


def test_digits_train_test_splits_are_disjoint_and_cover_all():
  train, test, full = (DigitsSource(16, s) for s in ('train', 'test', 'all'))
  assert (len(train), len(test), len(full)) == (1500, 297, 1797)
  np.testing.assert_array_equal(np.concatenate([train.images, test.images]), full.images)
  with pytest.raises(DataError, match="'train', 'test' or 'all'"):
    DigitsSource(16, 'validation')


def test_folder_missing_and_empty_give_clear_errors(tmp_path):
  with pytest.raises(DataError, match='does not exist'):
    FolderSource(str(tmp_path / 'nope'), 16)
  (tmp_path / 'empty' / 'sub').mkdir(parents=True)
  (tmp_path / 'empty' / 'notes.txt').write_text('x')
  with pytest.raises(DataError, match='contains no images'):
    FolderSource(str(tmp_path / 'empty'), 16)


def test_folder_recursive_crop_resize_and_labels(tmp_path):
  write_images(str(tmp_path), 3, sub='cats')
  write_images(str(tmp_path), 2, sub='dogs/deeper')
  src = FolderSource(str(tmp_path), 16, labels_from_subdirs=True)
  assert len(src) == 5 and list(src.class_names) == ['cats', 'dogs']
  example = src.load(4)
  assert example['image'].shape == (16, 16, 3) and example['label'] == 1


def test_folder_annotations_follow_crop_and_flip(tmp_path):
  """Captions (.txt), boxes (.json, relative to the full image) and class maps (_seg.png) beside
  each image; a 40x20 (w x h) image is centre-cropped to its middle 20x20 square."""
  import json

  from PIL import Image

  img = np.zeros((20, 40, 3), np.uint8)
  img[5:15, 12:18] = 255  # a white block inside the crop, left half of the square
  Image.fromarray(img).save(tmp_path / 'a.png')
  (tmp_path / 'a.txt').write_text('a white block\n\nanother caption\n')
  (tmp_path / 'a.json').write_text(
    json.dumps(
      [
        {'class': 3, 'bbox': [12 / 40, 5 / 20, 6 / 40, 10 / 20]},
        {'class': 4, 'bbox': [0.0, 0.0, 0.1, 0.1]},
      ]
    )
  )  # outside the crop: dropped
  seg = np.zeros((20, 40), np.uint8)
  seg[5:15, 12:18] = 2
  Image.fromarray(seg).save(tmp_path / 'a_seg.png')
  src = FolderSource(str(tmp_path), 10, annotations=('caption', 'boxes', 'segmentation'))
  assert len(src) == 1  # the _seg.png is not an image of the dataset
  e = src.load(0)
  assert e['caption'] == ['a white block', 'another caption']
  (box,) = e['boxes']
  assert box['class'] == 3
  np.testing.assert_allclose(box['bbox'], [2 / 20, 5 / 20, 6 / 20, 10 / 20], atol=1e-6)
  np.testing.assert_array_equal(e['segmentation'], seg[:, 10:30][1::2, 1::2])  # crop, nearest
  f = src.load(0, flip=True)
  np.testing.assert_allclose(f['boxes'][0]['bbox'], [12 / 20, 5 / 20, 6 / 20, 10 / 20], atol=1e-6)
  np.testing.assert_array_equal(f['segmentation'], e['segmentation'][:, ::-1])
  (tmp_path / 'a.txt').unlink()
  with pytest.raises(DataError, match="a.txt' does not exist"):
    FolderSource(str(tmp_path), 10, annotations=('caption',))


def test_degradations_and_masks():
  from ldm_jax.tasks.degradations import bicubic_downscale, bsr_light
  from ldm_jax.tasks.masks import random_mask

  img = DigitsSource(32).load(0)['image']
  lr = bicubic_downscale(img, 4)
  assert lr.shape == (8, 8, 3) and lr.dtype == np.uint8
  a = bsr_light(img, 4, np.random.default_rng(0))
  assert a.shape == (8, 8, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, bsr_light(img, 4, np.random.default_rng(0)))  # seeded
  assert not np.array_equal(a, bsr_light(img, 4, np.random.default_rng(1)))
  assert np.abs(a.astype(int) - lr).mean() < 60  # degraded, still the same picture
  for kind in ('strokes', 'boxes', 'mixed'):
    masks = np.stack([random_mask(64, np.random.default_rng(i), kind) for i in range(20)])
    assert set(np.unique(masks)) == {0.0, 1.0}
    cover = masks.mean((1, 2))
    assert (cover > 0).all() and (cover < 1).all() and 0.05 < cover.mean() < 0.7


def test_corrupt_image_is_skipped_and_counted(tmp_path):
  write_images(str(tmp_path), 6)
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
  (tmp_path / 'truncated.jpg').write_bytes(open(tmp_path / 'img1.jpg', 'rb').read()[:50])
  it = RandomAccessBatches(FolderSource(str(tmp_path), 16), global_batch=8, seed=0)
  for _ in range(3):
    batch = next(it)
    assert batch['image'].shape == (8, 16, 16, 3)
    assert np.all(np.abs(batch['image']) <= 1.0)
  assert it.num_corrupt == 2


def test_batches_depend_only_on_seed_and_step():
  config = tiny_autoencoder_config()
  src = make_source(config.data)
  a = RandomAccessBatches(src, 16, seed=1)
  first = [next(a) for _ in range(5)]
  resumed = RandomAccessBatches(src, 16, seed=1, start_position=48)
  np.testing.assert_array_equal(next(resumed)['image'], first[3]['image'])
  # Two processes take disjoint halves of the same global batch.
  p0 = RandomAccessBatches(src, 16, seed=1, process=(0, 2)).batch_for_step(2)
  p1 = RandomAccessBatches(src, 16, seed=1, process=(1, 2)).batch_for_step(2)
  np.testing.assert_array_equal(np.concatenate([p0['label'], p1['label']]), first[2]['label'])
  # The data position (examples consumed, stored in checkpoints) survives a batch-size change:
  # after 3 batches of 16, batches of 32 continue with examples [48, 80).
  bigger = RandomAccessBatches(src, 32, seed=1, start_position=48)
  np.testing.assert_array_equal(
    next(bigger)['image'], np.concatenate([first[3]['image'], first[4]['image']])
  )
  # An epoch covers every example exactly once.
  n = len(src)
  seen = np.concatenate([a._perm(0)[i * 16 : (i + 1) * 16] for i in range(n // 16)])
  assert len(set(seen.tolist())) == len(seen)


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  from ldm_jax.data import make_train_iterator

  config = tiny_autoencoder_config()
  config.data.update(dict(source='tfds', name='mnist', image_size=16, random_flip=True))
  with tfds.testing.mock_data(num_examples=32):
    batch = next(iter(make_train_iterator(config, start_step=0)))
  assert batch['image'].shape == (8, 16, 16, 3) and batch['image'].dtype == np.float32
  assert batch['label'].shape == (8,) and np.abs(batch['image']).max() <= 1.0


def test_fid_reference_images_of_tfds_data_are_the_training_preprocessing_in_uint8():
  """The FID reference reads a TFDS split in file order, no flips, through the training crop and
  resize, as uint8 (the Inception input): the training pipeline's [-1, 1] images exactly."""
  tfds = pytest.importorskip('tensorflow_datasets')
  from ldm_jax.data.pipeline import eval_batches
  from ldm_jax.eval.sample_quality import dataset_images

  config = tiny_autoencoder_config()
  config.data.update(dict(source='tfds', name='mnist', split='train', image_size=16))
  with tfds.testing.mock_data(num_examples=20):
    batches = list(dataset_images(config.data, batch_size=8, max_images=12))
    model_range = np.concatenate([b['image'] for b in eval_batches(config.data, 8, 12)])
  assert [b.shape for b in batches] == [(8, 16, 16, 3), (4, 16, 16, 3)]
  images = np.concatenate(batches)
  assert images.dtype == np.uint8 and images.std() > 0
  np.testing.assert_array_equal(images.astype(np.float32) / 127.5 - 1.0, model_range)


def test_tfds_captions_and_boxes_with_mock_data():
  """coco_captions ('captions/text') and coco/2017 ('objects/bbox', 'objects/label') features
  become token conditions; boxes are valid layouts after crop and flip."""
  tfds = pytest.importorskip('tensorflow_datasets')
  from ldm_jax.data import make_train_iterator
  from ldm_jax.data.pipeline import condition_examples
  from ldm_jax.tasks import get_task
  from ldm_jax.tasks.layout_tokens import detokenize_layout
  from tests.helpers import tiny_task_config

  for task, name, length in (('text', 'coco_captions', 77), ('layout', 'coco/2017', 92)):
    config = tiny_task_config(task)
    config.data.update(dict(source='tfds', name=name, image_size=16, random_flip=True))
    task_obj = get_task(config)
    with tfds.testing.mock_data(num_examples=16):
      batch = next(iter(make_train_iterator(config, task=task_obj, start_step=0)))
      fixed = condition_examples(config.data, task_obj, 8)
    assert batch['image'].shape == (8, 16, 16, 3) and batch['cond'].shape == (8, length)
    assert fixed['cond'].shape == (8, length)
    if task == 'text':
      assert (batch['cond'][:, 0] == 101).all()
    else:
      for tokens in batch['cond']:
        for obj in detokenize_layout(tokens):
          x, y, w, h = obj['bbox']
          assert 0 <= x <= x + w <= 1 and 0 <= y <= y + h <= 1
