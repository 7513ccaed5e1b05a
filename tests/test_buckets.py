"""Aspect-ratio buckets (config.data.buckets): SDXL's list, nearest-ratio assignment, cover-and-
crop with SDXL's size conditioning, batches of one shape from a folder of mixed aspect ratios,
each host's part, drawn in proportion, exact resume at a large position (a tiny LDM that trains
and resumes bitwise on them: tests/test_recipes.py)."""

import collections

import numpy as np
import pytest
from PIL import Image

from ldm_jax.config import ConfigError
from ldm_jax.config.buckets import SDXL_BUCKETS, parse_buckets
from ldm_jax.data import DataError, RandomAccessBatches
from ldm_jax.data.buckets import BucketPlan, bucketed_examples, nearest_bucket
from ldm_jax.data.pipeline import Decoding
from ldm_jax.data.preprocess import cover_crop
from ldm_jax.data.sources import FolderSource
from tests.helpers import MIXED_BUCKETS as BUCKETS
from tests.helpers import mixed_aspect_folder


def test_sdxl_list_is_the_papers():
  assert parse_buckets('sdxl') == SDXL_BUCKETS
  assert (
    len(SDXL_BUCKETS) == 41 and SDXL_BUCKETS[0] == (512, 2048) and SDXL_BUCKETS[-1] == (2048, 512)
  )
  assert (
    (1024, 1024) in SDXL_BUCKETS and (832, 1216) in SDXL_BUCKETS and (1216, 832) in SDXL_BUCKETS
  )
  for h, w in SDXL_BUCKETS:
    assert h % 64 == 0 and w % 64 == 0 and 0.9 < h * w / 1024**2 < 1.1
  assert parse_buckets('') == () and parse_buckets('8x16, 16x8') == ((8, 16), (16, 8))
  for bad in ('8x', '8*16', '8x16,8x16', '0x16'):
    with pytest.raises(ConfigError, match='buckets'):
      parse_buckets(bad)


def test_nearest_ratio_and_cover_crop_with_size_conditioning():
  buckets = parse_buckets(BUCKETS)
  assert [
    nearest_bucket(hw, buckets) for hw in [(30, 50), (40, 40), (50, 30), (18, 21), (64, 20)]
  ] == [
    0,
    1,
    2,
    1,
    2,
  ]
  assert nearest_bucket((768, 1376), SDXL_BUCKETS) == SDXL_BUCKETS.index((768, 1344))
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
  out, original, crop = cover_crop(Image.fromarray(pixels), (16, 16))
  # covered: 30x50 scaled by 16/30 -> 16x27, centre crop of width 16 from 27: left round(5.5) = 6
  assert out.shape == (16, 16, 3) and original == (30, 50) and crop == (0, 6)
  resized = np.asarray(Image.fromarray(pixels).resize((27, 16), resample=Image.BICUBIC))
  np.testing.assert_array_equal(out, resized[:, 6:22])
  out, original, crop = cover_crop(Image.fromarray(pixels), (12, 20))
  assert out.shape == (12, 20, 3) and original == (30, 50) and crop == (0, 0)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return mixed_aspect_folder(tmp_path_factory.mktemp('mixed'))


class _Data:
  def __init__(self, path, batch=4):
    self.path, self.buckets, self.random_flip, self.source = path, BUCKETS, True, 'folder'
    self.batch = batch


def _batches(folder, batch, position=0, process=(0, 1), threads=4):
  source = FolderSource(folder, 16, labels_from_subdirs=True)
  examples = bucketed_examples(source, _Data(folder), batch, seed=5)
  return RandomAccessBatches(
    source,
    batch,
    5,
    start_position=position,
    process=process,
    decoding=Decoding(num_threads=threads),
    examples=examples,
  )


def test_batches_have_one_shape_each_host_its_part_and_resume_exactly(folder):
  buckets = parse_buckets(BUCKETS)
  it = _batches(folder, 4)
  first = [next(it) for _ in range(12)]
  # 13 landscape, 9 + 1 square, 6 + 1 portrait; the unreadable file is counted at once
  assert it.num_corrupt == 1
  for b in first:
    shape = b['image'].shape[1:3]
    assert shape in buckets and b['image'].shape == (4, *shape, 3)
    # every image is in the bucket of its own aspect ratio, and says its size and crop
    assert all(buckets[nearest_bucket(tuple(hw), buckets)] == shape for hw in b['original_size'])
    assert b['crop_top_left'].shape == (4, 2) and (b['crop_top_left'] >= 0).all()
  # An epoch is 3 + 2 + 1 = 6 batches (the remainders wait); no image twice within one
  for epoch in (first[:6], first[6:]):
    seen = [tuple(x.ravel()[:16]) for b in epoch for x in b['image']]
    assert len(set(seen)) == 24
    assert collections.Counter(b['image'].shape[1:3] for b in epoch) == {
      (12, 20): 3,
      (16, 16): 2,
      (20, 12): 1,
    }
  # Two hosts: each reads its contiguous half, together the single-process batch
  hosts = [_batches(folder, 4, 0, (p, 2)) for p in range(2)]
  for b in first[:6]:
    parts = [next(h) for h in hosts]
    for k in b:
      np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), b[k])
  # Resume: starting at any position gives the batches from there, also far into the run
  resumed = _batches(folder, 4, position=7 * 4)
  for b in first[7:]:
    for k, v in next(resumed).items():
      np.testing.assert_array_equal(v, b[k])
  far = 4 * 2_500_003
  a, b = next(_batches(folder, 4, position=far)), next(_batches(folder, 4, position=far, threads=1))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_buckets_are_drawn_in_proportion_to_their_size():
  sizes = np.array([[10, 20]] * 400 + [[20, 20]] * 200 + [[20, 10]] * 40, np.int32)
  plan = BucketPlan(sizes, parse_buckets('8x16,16x16,16x8'), global_batch=8, seed=0)
  drawn = collections.Counter(plan.batch(k)[0] for k in range(80 * 100))
  assert drawn == {0: 5000, 1: 2500, 2: 500}  # 50 + 25 + 5 batches an epoch, 100 epochs
  first_half = collections.Counter(plan.batch(k)[0] for k in range(40))
  assert abs(first_half[0] / 40 - 50 / 80) < 0.2  # mixed within an epoch, not bucket by bucket
  with pytest.raises(DataError, match='no aspect-ratio bucket holds a whole global batch of 1024'):
    BucketPlan(sizes, parse_buckets('8x16'), global_batch=1024, seed=0)


def test_settings_that_cannot_work_are_config_errors():
  from ldm_jax.config import validate
  from tests.helpers import tiny_task_config

  c = tiny_task_config('class')
  c.data.update(source='folder', path='/x', buckets='12x20,16x18', cache_latents=False)
  with pytest.raises(ConfigError, match='16x18 not divisible by 4'):
    validate(c)
  c.data.update(buckets=BUCKETS, cache_latents=True)
  with pytest.raises(ConfigError, match='a cache holds latents of one shape'):
    validate(c)
  c.data.update(source='digits', cache_latents=False)
  with pytest.raises(ConfigError, match="needs a folder, jsonl or records source, not 'digits'"):
    validate(c)
