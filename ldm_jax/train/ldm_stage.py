"""Stage 2: the latent diffusion model (UNet + conditioning encoder) on a frozen first stage.
The loop (``train.loop``) asks it for the initial state, the step, the frozen first stage, the
data (the task's conditions, or cached latents), scale_by_std and the sample grid."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import storage
from ldm_jax.config import state_defining_differences
from ldm_jax.data import make_source, make_train_iterator
from ldm_jax.data.latent_cache import (
  DiskLatentCache,
  cache_stamp,
  encode_dataset,
  params_fingerprint,
)
from ldm_jax.data.pipeline import condition_examples, random_access
from ldm_jax.diffusion.samplers import get_sampler
from ldm_jax.errors import UserError
from ldm_jax.images import make_grid, to_uint8
from ldm_jax.latent_diffusion import LatentDiffusion, first_stage_shapes, latent_shape
from ldm_jax.parallel import sharding
from ldm_jax.sampling.generate import SampleDrawer
from ldm_jax.train.ldm_step import latent_std, make_ldm_step
from ldm_jax.train.state import TrainState, make_optimizer

log = logging.getLogger('ldm_jax')


def load_first_stage(config):
  """Frozen first-stage parameters for an LDM run, from config.first_stage.checkpoint (the workdir
  of an autoencoder run, or of an LDM run, whose stored first stage is then reused)."""
  path = config.first_stage.checkpoint or config.training.get('init_from', '')
  if not path:
    raise UserError(
      'an LDM run needs a trained first stage: set --config.first_stage.checkpoint='
      'WORKDIR of an autoencoder run (python train.py --config=<autoencoder config>)'
    )
  if not storage.isdir(path):
    raise UserError(
      f'config.first_stage.checkpoint={path!r} does not exist; give the workdir of an '
      'autoencoder run (or one of its checkpoints/<step> folders)'
    )
  saved, step, state, first_stage = ckpt_lib.load_raw(path)
  current = ckpt_lib.to_json_dict(config)
  diffs = state_defining_differences(
    {'first_stage': saved['first_stage']}, {'first_stage': current['first_stage']}
  )
  if diffs:
    raise ckpt_lib.CheckpointMismatch(
      f'the first stage in {path} (step {step}) does not match config.first_stage:\n  '
      + '\n  '.join(diffs)
      + "\nMake config.first_stage equal to the autoencoder run's config."
    )
  params = first_stage if saved['stage'] == 'ldm' else state['params']
  log.info('first stage: %s, step %d (%s)', path, step, saved['stage'])
  return params


# What a run that starts from another workdir's weights must share with it (the models' shapes and
# what the UNet predicts); training settings (optimizer, EMA, data, p_uncond, ...) may differ.
_INIT_SHARED = ('stage', 'first_stage.', 'unet.', 'cond_stage.', 'diffusion.parameterization')
_INIT_FREE = ('cond_stage.trainable', 'first_stage.checkpoint')


def load_init_source(config) -> tuple[int, dict]:
  """(step, state as numpy trees) of config.training.init_from's newest checkpoint, refused when
  it holds another model than the config's."""
  path = config.training.init_from
  saved, step, raw, _ = ckpt_lib.load_raw(path)
  diffs = [
    d
    for d in state_defining_differences(saved, ckpt_lib.to_json_dict(config))
    if d.startswith(_INIT_SHARED) and not d.startswith(_INIT_FREE)
  ]
  if diffs:
    raise ckpt_lib.CheckpointMismatch(
      f'training.init_from={path} (step {step}) holds another model:\n  '
      + '\n  '.join(diffs)
      + '\nUse the config the weights were converted or trained with.'
    )
  return step, raw


class LDMStage:
  grid_name = 'samples'

  def __init__(self, config, mesh):
    t = config.training
    self.config, self.mesh = config, mesh
    get_sampler(config.sampling.sampler)  # a wrong name fails now, not at the first grid
    self.ldm = LatentDiffusion.from_config(config, t.compute_dtype, t.remat)
    self.task = self.ldm.task
    self.tx = make_optimizer(config)
    self.step = make_ldm_step(self.ldm, self.tx, config)
    self._fs_sh = None
    self._drawer = self._examples = None

  # -- state -----------------------------------------------------------------------------------
  def init_state(self, key) -> TrainState:
    params = self.ldm.init_params(key, latent_shape(self.config))
    return TrainState.create(
      params, self.tx, self.config.training.use_ema, self.config.diffusion.scale_factor
    )

  def first_stage_shapes(self):
    """The frozen first stage's abstract parameters, with their shardings."""
    abstract = first_stage_shapes(self.config)
    self._fs_sh = sharding.state_shardings(abstract, self.mesh, self.config.mesh)
    return sharding.with_shardings(abstract, self._fs_sh)

  def load_first_stage(self):
    return jax.device_put(load_first_stage(self.config), self._fs_sh)

  def frozen(self, first_stage_params):
    return first_stage_params, self._fs_sh

  def abstract_frozen(self):
    """The step's frozen input as ShapeDtypeStructs with shardings (compiling without weights)."""
    return self.first_stage_shapes()

  # -- data ------------------------------------------------------------------------------------
  def train_iterator(self, position: int, first_stage_params, params=None):
    """``params``: the run's parameters (data.text_cache checks its encoder against them)."""
    cache = None
    if self.config.data.cache_latents:
      cache = self._latent_cache(first_stage_params)
    elif self.config.data.get('latent_cache'):
      captions = 'caption' in self.task.annotations
      stamp = cache_stamp(self.config, params_fingerprint(first_stage_params), captions)
      cache = DiskLatentCache(self.config.data.latent_cache, stamp)
    return make_train_iterator(
      self.config,
      task=self.task,
      start_position=position,
      process=(jax.process_index(), jax.process_count()),
      source=cache,
      text_cache=self._text_cache(params),
    )

  def _text_cache(self, params):
    path = self.config.data.get('text_cache')
    if not path:
      return None
    from ldm_jax.data.text_cache import TextCache, text_stamp

    fingerprint = params_fingerprint(params['cond_stage'])
    tokenizer = getattr(self.task, 'tokenizers', self.task.tokenizer)  # SDXL: both
    return TextCache(path, text_stamp(self.config, fingerprint, tokenizer))

  def _latent_cache(self, first_stage_params):
    c = self.config
    if not random_access(c.data):
      raise ValueError(
        f'config.data.cache_latents needs a random-access source, not {c.data.source!r} (TFDS '
        'prepared as TFRecord, tar shards); set --config.data.cache_latents=False'
      )
    # replicated output: every process gets the whole cache (also with several processes)
    encode = jax.jit(
      lambda p, x: self.ldm.encode_moments(p, x).astype(jnp.float32),
      out_shardings=sharding.replicated(self.mesh),
    )
    batch_sh = sharding.batch_sharded(self.mesh)
    fn = lambda images: encode(first_stage_params, jax.device_put(images, batch_sh))
    source = make_source(c.data, self.task.annotations)
    return encode_dataset(source, fn, c.training.batch_size, c.data.random_flip)

  def first_batch(self, state, next_batch, key, first_stage_params):
    """scale_by_std: scale_factor = 1 / std of the first batch's latents, as the reference (which
    then trains on that batch). Returns (state, that batch or None)."""
    if not self.config.diffusion.scale_by_std:
      return state, None
    first = next_batch()
    std = jax.jit(lambda p, b, k: latent_std(self.ldm, p, b, k))(
      first_stage_params, first, jax.random.fold_in(key, 2**31 - 1)
    )
    state = state.replace(scale_factor=jax.device_put(1.0 / std, sharding.replicated(self.mesh)))
    log.info('scale_by_std: latent std %.5f -> scale_factor %.5f', float(std), 1.0 / float(std))
    return state, first

  # -- images ----------------------------------------------------------------------------------
  def grid(self, step, state, batch, first_stage_params, n: int) -> np.ndarray:
    """Samples of the EMA weights: one column per class (class models), or rows of condition |
    sample | original for the first ``n`` examples of the data (other conditional tasks)."""
    c = self.config
    params = state.ema_params if state.ema_params is not None else state.params
    if self._drawer is None:
      self._drawer = SampleDrawer(c, self.mesh, self.ldm)
    if self._examples is None and self.task.samples_from_examples:
      self._examples = condition_examples(c.data, self.task, n)  # fixed, next to the samples
    key = jax.random.fold_in(jax.random.PRNGKey(c.seed + 1), step)
    weights = (params, first_stage_params, state.scale_factor)
    images, cond = self._drawer(weights, key, n, self._examples)
    if self._examples is None:
      rows = getattr(self.task, 'num_classes', 0) or max(
        1, int(np.sqrt(c.training.num_sample_images))
      )
      return make_grid(images, nrow=rows)
    h, w = images.shape[1:3]
    rows = np.stack([self.task.tiles(cond, h, w), images, to_uint8(self._examples['image'])], 1)
    return make_grid(rows.reshape((-1,) + rows.shape[2:]), nrow=3)

  def evaluator(self, workdir):
    if not self.config.training.eval_every:
      return None
    from ldm_jax.eval.sample_quality import TrainingEvaluator

    return TrainingEvaluator(self.config, self.mesh, self.ldm, workdir)
