"""data.text_cache: a frozen text encoder's outputs cached on disk (python -m ldm_jax.cache_text),
read back per example, refused when made with another encoder, tokenizer or data, and a run with
it trains as a run that encodes the captions in the step."""

import json

import jax
import numpy as np
import pytest

from ldm_jax.data import DataError
from ldm_jax.data.sources import DigitsSource
from ldm_jax.data.text_cache import TextCache


@pytest.fixture(scope='module')
def text_run(tmp_path_factory):
  """A converted tiny text LDM (BERT encoder), its config with the encoder frozen, and a text cache
  of the digits' captions built from it."""
  from ldm_jax.cache_text import build
  from tests.helpers import tiny_task_config
  from tests.test_tasks import converted_workdir

  root = tmp_path_factory.mktemp('text_cache')
  base = converted_workdir('text', str(root))

  def config(**data):
    c = tiny_task_config('text')
    c.first_stage.checkpoint = base
    c.training.update(init_from=base, num_steps=2, checkpoint_every=2, log_every=1)
    c.cond_stage.update(trainable=False, p_uncond=0.25)
    c.data.update(split='test', cache_latents=False, **data)
    return c

  out = str(root / 'cache')
  summary = build(config(), out, batch_size=64)
  return config, out, summary, root


def test_every_caption_is_cached_as_the_encoder_computes_it(text_run):
  from ldm_jax.cache_text import encoder_params
  from ldm_jax.latent_diffusion import LatentDiffusion

  config, out, summary, _ = text_run
  source = DigitsSource(16, 'test')
  assert summary['examples'] == len(source) == summary['examples_encoded']
  cache = TextCache(out)
  ldm = LatentDiffusion.from_config(config(), 'float32', False)
  params = encoder_params(config())
  for index in (0, 7, len(source) - 1):
    captions = source.load(index)['caption']
    ctx = cache.contexts(index)
    want = ldm.task.encode(ldm, params, None, ldm.task.tokenize(captions))
    assert ctx.shape == (len(captions), 77, 32)
    np.testing.assert_allclose(ctx, np.asarray(want), rtol=1e-5, atol=1e-5)
  null = ldm.task.encode(ldm, params, None, ldm.task.tokenize(['']))[0]
  np.testing.assert_allclose(cache.null, np.asarray(null), rtol=1e-5, atol=1e-5)
  # a rerun finds every chunk complete and writes nothing
  from ldm_jax.cache_text import build

  assert build(config(), out, batch_size=64)['chunks_written'] == 0


def test_a_cache_of_another_encoder_tokenizer_or_data_is_refused(text_run):
  config, out, _, _ = text_run
  stamp = json.load(open(f'{out}/stamp.json'))
  for key, value, named in [
    ('cond_stage_params', 'f' * 64, 'cond_stage_params: cache'),
    ('tokenizer', '0' * 64, 'tokenizer: cache'),
  ]:
    with pytest.raises(DataError, match=named):
      TextCache(out, {**stamp, key: value})
  other = {**stamp, 'data': {**stamp['data'], 'split': 'train'}}
  with pytest.raises(DataError, match="data.split: cache 'test', now 'train'"):
    TextCache(out, other)
  with pytest.raises(DataError, match='holds no text cache'):
    TextCache(out + '-missing')


def test_bad_settings_are_config_errors(text_run):
  from ldm_jax.config import ConfigError, validate

  config, out, _, _ = text_run
  c = config(text_cache=out)
  c.cond_stage.trainable = True
  with pytest.raises(ConfigError, match='trainable=False'):
    validate(c)


def test_a_run_on_the_cache_trains_as_one_that_encodes_in_the_step(text_run):
  """Two steps (condition dropout included: the null is the cached empty prompt) with and
  without the cache: the same losses and gradient norms. As MLPerf's setting, the UNet starts
  fresh and only the text encoder comes from init_from (training.init_parts)."""
  from ldm_jax import checkpoint as ckpt_lib
  from ldm_jax.train.loop import train

  config, out, _, root = text_run

  def fresh_unet(**data):
    c = config(**data)
    c.training.init_parts = 'cond_stage'
    return c

  train(fresh_unet(), str(root / 'plain'))
  cached = train(fresh_unet(text_cache=out), str(root / 'cached'))
  base = ckpt_lib.load_raw(config().training.init_from)[2]['params']
  for a, b in zip(
    jax.tree.leaves(cached.params['cond_stage']), jax.tree.leaves(base['cond_stage'])
  ):
    np.testing.assert_array_equal(np.asarray(a), b)  # taken from init_from, and frozen
  far = [
    np.abs(np.asarray(a) - b).max()
    for a, b in zip(jax.tree.leaves(cached.params['unet']), jax.tree.leaves(base['unet']))
  ]
  assert max(far) > 0.1  # a fresh UNet, not init_from's (two steps move it by ~1e-3)
  assert_same_steps(root)


def test_an_sdxl_cache_holds_both_encoders_and_the_pooled_embedding(tmp_path):
  """SDXL (configs/sd_finetune.py:tiny_sdxl from the converted tiny diffusers pipeline): each
  caption's entry is both encoders' context and the pooled embedding; the condition from it
  encodes as the tokens do (for a refiner-style null too: the cached empty prompt), and two steps
  with condition dropout train as without the cache."""
  from ldm_jax.cache_text import build, encoder_params
  from ldm_jax.configs import sd_finetune
  from ldm_jax.convert.diffusers import convert_diffusers
  from ldm_jax.latent_diffusion import LatentDiffusion
  from ldm_jax.train.loop import train
  from tests.test_sdxl import _sdxl_pipeline

  _sdxl_pipeline(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), base := str(tmp_path / 'base'))

  def config(**data):
    c = sd_finetune.get_config('tiny_sdxl')
    c.training.update(init_from=base, num_steps=2, checkpoint_every=2, log_every=1)
    c.cond_stage.p_uncond = 0.5
    c.data.update(split='test', **data)
    return c

  out = str(tmp_path / 'cache')
  build(config(), out, batch_size=64)
  cache = TextCache(out)
  ldm = LatentDiffusion.from_config(config(), 'float32', False)
  task, params = ldm.task, encoder_params(config())
  caption = DigitsSource(16, 'test').load(3)['caption']
  k = task.user_condition(1, 'a')[0]['micro'].shape[1]
  numbers = lambda n: {
    'micro': np.full((n, k), 16, np.float32),
    'keep_text': np.ones(n, np.float32),
  }
  assert cache.contexts(3).shape == (len(caption), *task.cache_row_shape())
  for cached, plain in ((cache.contexts(3), caption), (cache.null[None], [''])):
    want = task.encode(ldm, params, None, {**numbers(len(plain)), 'tokens': task.tokenize(plain)})
    got = task.encode(ldm, params, None, {**numbers(len(plain)), 'cached': cached})
    for name in ('crossattn', 'vector'):
      np.testing.assert_allclose(
        np.asarray(got[name]), np.asarray(want[name]), rtol=1e-5, atol=1e-5
      )

  train(config(), str(tmp_path / 'plain'))
  train(config(text_cache=out), str(tmp_path / 'cached'))
  assert_same_steps(tmp_path)


def assert_same_steps(root) -> None:
  """The runs root/plain and root/cached logged the same 2 steps: the loss and gradient norm of
  each, up to float rounding of the encoder in another program."""
  rows = {}
  for name in ('plain', 'cached'):
    lines = [json.loads(x) for x in open(root / name / 'metrics.jsonl')]
    rows[name] = [(r['loss'], r['grad_norm']) for r in lines if 'loss' in r]
  assert len(rows['plain']) == 2 and rows['plain'][0] != rows['plain'][1]
  np.testing.assert_allclose(rows['cached'], rows['plain'], rtol=1e-5)
