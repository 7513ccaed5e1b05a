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
  img, label = src.load(4)
  assert img.shape == (16, 16, 3) and label == 1


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
  resumed = RandomAccessBatches(src, 16, seed=1, start_step=3)
  np.testing.assert_array_equal(next(resumed)['image'], first[3]['image'])
  # Two processes take disjoint halves of the same global batch.
  p0 = RandomAccessBatches(src, 16, seed=1, process_index=0, process_count=2).batch_for_step(2)
  p1 = RandomAccessBatches(src, 16, seed=1, process_index=1, process_count=2).batch_for_step(2)
  np.testing.assert_array_equal(np.concatenate([p0['label'], p1['label']]), first[2]['label'])
  # An epoch covers every example exactly once.
  n = len(src)
  seen = np.concatenate([a._perm(0)[i * 16:(i + 1) * 16] for i in range(n // 16)])
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
