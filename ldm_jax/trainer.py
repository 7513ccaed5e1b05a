"""The training loop: build mesh, data, state; restore; loop (step, log, checkpoint, sample); finish.

One jitted step over a ('data', 'fsdp') Mesh: the global batch is sharded over all devices, the
state is replicated or FSDP-sharded (config.mesh; GSPMD inserts the collectives). Works unchanged
on 1 CPU, 8 GPUs or a multi-host pod slice. Nothing is lost: checkpoints hold the state, the
frozen first stage and the data position; a run resumes from the newest readable one; SIGTERM
(preemption) saves at the current step and exits cleanly; NaN/Inf updates are skipped.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import sharding
from ldm_jax.config import (learning_rate, num_real_classes,
                            state_defining_differences, validate)
from ldm_jax.data import make_source, make_train_iterator
from ldm_jax.data.conditions import ANNOTATIONS, task_of
from ldm_jax.data.pipeline import condition_examples
from ldm_jax.data.latent_cache import encode_dataset
from ldm_jax.generate import draw_samples, to_uint8, training_generate_fn
from ldm_jax.images import make_grid, save_png
from ldm_jax.metric_writer import MetricWriter
from ldm_jax.lpips import make_lpips
from ldm_jax.models import LatentDiffusion, build_discriminator, build_first_stage, latent_shape
from ldm_jax.visualize import condition_tiles
from ldm_jax.train_state import TrainState, init_loss_state, make_optimizer
from ldm_jax.distributed import Preemption
from ldm_jax.train_steps import guard_nonfinite, latent_std, make_autoencoder_step, make_ldm_step

log = logging.getLogger('ldm_jax')


def load_first_stage(config):
  """Frozen first-stage parameters for an LDM run, from config.first_stage.checkpoint (the workdir
  of an autoencoder run, or of an LDM run, whose stored first stage is then reused)."""
  path = config.first_stage.checkpoint
  if not path:
    raise ValueError('an LDM run needs a trained first stage: set --config.first_stage.checkpoint='
                     'WORKDIR of an autoencoder run (python train.py --config=<autoencoder config>)')
  if not os.path.isdir(path):
    raise FileNotFoundError(f'config.first_stage.checkpoint={path!r} does not exist')
  saved, step, state, first_stage = ckpt_lib.load_raw(path)
  current = ckpt_lib.to_json_dict(config)
  diffs = [d for d in state_defining_differences({'first_stage': saved['first_stage']},
                                                 {'first_stage': current['first_stage']})]
  if diffs:
    raise ckpt_lib.CheckpointMismatch(
        f'the first stage in {path} (step {step}) does not match config.first_stage:\n  '
        + '\n  '.join(diffs) + '\nMake config.first_stage equal to the autoencoder run\'s config.')
  params = first_stage if saved['stage'] == 'ldm' else state['params']
  log.info('first stage: %s, step %d (%s)', path, step, saved['stage'])
  return params


def _fresh_state(config, model_init, tx, scale_factor, loss_init=None):
  def init(key):
    loss_state = loss_init(jax.random.fold_in(key, 1)) if loss_init is not None else None
    return TrainState.create(model_init(key), tx, config.training.use_ema, scale_factor, loss_state)
  return init


def train(config, workdir: str) -> TrainState:
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  t = config.training
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(t.batch_size, mesh, t.grad_accum_steps)
  repl = sharding.replicated(mesh)
  tx = make_optimizer(config)
  key = jax.random.PRNGKey(config.seed)
  ldm_stage = config.stage == 'ldm'

  if ldm_stage:
    ldm = LatentDiffusion.from_config(config, t.compute_dtype, t.remat)
    model_init = lambda k: ldm.init_params(k, latent_shape(config))
    step_fn = make_ldm_step(ldm, tx, config)
    loss_init, frozen_loss = None, None
  else:
    model = build_first_stage(config.first_stage)
    size, L = config.data.image_size, config.first_stage_loss
    model_init = lambda k: model.init(k, jnp.zeros((1, size, size, 3), jnp.float32))['params']
    disc = build_discriminator(config)
    tx_disc = make_optimizer(config) if disc is not None else None  # same lr and betas as the AE
    tx_logvar = make_optimizer(config) if L.train_logvar else None
    frozen_loss, lpips_fn = make_lpips(L.lpips_weights) if L.perceptual_weight > 0 else (None, None)
    disc_input = jnp.zeros((1, size, size, L.disc_in_channels), jnp.float32)
    loss_init = lambda k: init_loss_state(config, k, disc, disc_input, tx_disc, tx_logvar)
    step_fn = make_autoencoder_step(model, tx, config, disc, tx_disc, lpips_fn, tx_logvar)
  init_fn = _fresh_state(config, model_init, tx, config.diffusion.scale_factor if ldm_stage else 1.0,
                         loss_init)

  # -- state: restore or create ------------------------------------------------------------
  abstract = jax.eval_shape(init_fn, key)
  state_sh = sharding.state_shardings(abstract, mesh, config.mesh)
  abstract_fs = fs_sh = None
  if ldm_stage:
    s = config.data.image_size
    abstract_fs = jax.eval_shape(
        lambda k: build_first_stage(config.first_stage).init(k, jnp.zeros((1, s, s, 3)))['params'],
        key)
    fs_sh = sharding.state_shardings(abstract_fs, mesh, config.mesh)
  checkpointer = ckpt_lib.Checkpointer(workdir, t.keep_checkpoints, t.async_checkpoints,
                                       t.keep_every)
  restored = checkpointer.restore_newest_readable(
      config, sharding.with_shardings(abstract, state_sh),
      sharding.with_shardings(abstract_fs, fs_sh) if ldm_stage else None)
  data_state = None
  if restored is not None:
    latest, state, first_stage_params, data_state = restored
    log.info('resumed from %s at step %d', checkpointer.directory, latest)
  else:
    latest = None
    state = jax.jit(init_fn, out_shardings=state_sh)(key)
    first_stage_params = (jax.device_put(load_first_stage(config), fs_sh) if ldm_stage else None)
  start_step = int(state.step)
  # The data position: examples consumed by the job (older checkpoints: steps x batch size).
  position = data_state['position'] if data_state else start_step * t.batch_size
  # The step's frozen inputs: the first stage (LDM) or the LPIPS network (autoencoder).
  frozen = first_stage_params if ldm_stage else (
      jax.device_put(frozen_loss, repl) if frozen_loss is not None else None)
  frozen_sh = fs_sh if ldm_stage else repl

  cache = None
  if ldm_stage and config.data.cache_latents:
    cache = _build_latent_cache(config, ldm, first_stage_params, mesh)
  data = make_train_iterator(config, start_position=position, process_index=jax.process_index(),
                             process_count=jax.process_count(), source=cache)
  next_batch = lambda: sharding.global_batch(next(data), mesh)

  if ldm_stage and config.diffusion.scale_by_std and latest is None:
    first = next_batch()  # the reference uses the very first training batch, then trains on it
    std = jax.jit(lambda p, b, k: latent_std(ldm, p, b, k))(first_stage_params, first,
                                                            jax.random.fold_in(key, 2**31 - 1))
    state = state.replace(scale_factor=jax.device_put(1.0 / std, repl))
    log.info('scale_by_std: latent std %.5f -> scale_factor %.5f', float(std), 1.0 / float(std))
    pending = first
  elif not ldm_stage and disc is not None and L.use_actnorm and latest is None:
    # ActNorm's data-dependent init, on what the reference's D sees first: reconstructions of the
    # first training batch by the initial autoencoder.
    pending = next_batch()
    rec = jax.jit(lambda p, x: model.apply({'params': p}, x, jax.random.fold_in(key, 3))[0])(
        state.params, pending['image'])
    ls = dict(state.loss_state)
    ls['disc'] = dict(disc.init(jax.random.fold_in(key, 4), rec))
    state = state.replace(loss_state=ls)
  else:
    pending = None
  state = jax.device_put(state, state_sh)

  train_step = jax.jit(guard_nonfinite(step_fn),
                       in_shardings=(state_sh, sharding.batch_sharded(mesh), frozen_sh),
                       out_shardings=(state_sh, repl), donate_argnums=(0,))
  writer = MetricWriter(workdir, enabled=is_main)
  image_logger = _ImageLogger(config, mesh, ldm if ldm_stage else model, ldm_stage, workdir, writer)
  evaluator = None
  if t.eval_every:
    from ldm_jax.eval.sample_quality import TrainingEvaluator
    evaluator = TrainingEvaluator(config, mesh, ldm, workdir)
  if is_main:
    log.info('stage=%s devices=%d (mesh %s) processes=%d global batch=%d%s lr=%.3g steps %d -> %d',
             config.stage, mesh.size, dict(mesh.shape), jax.process_count(), t.batch_size,
             f' ({t.grad_accum_steps} micro-batches)' if t.grad_accum_steps > 1 else '',
             learning_rate(config), start_step, t.num_steps)

  # -- loop --------------------------------------------------------------------------------
  history, last_log = [], time.time()
  # The bar only on a terminal; logs (files, pipes) get one line per log_every steps instead.
  bar = tqdm(total=t.num_steps, initial=start_step, disable=not (is_main and sys.stderr.isatty()),
             dynamic_ncols=True, mininterval=1.0, desc=config.stage)
  t_start = time.time()
  step, saved_step = start_step, latest
  nonfinite = _NonfiniteCounter(t.max_nonfinite_steps, checkpointer.directory)
  save = lambda force=False: checkpointer.save(
      step, state, config, first_stage_params, force=force,
      data_state={'position': position, 'global_batch': t.batch_size})
  try:
    with Preemption(checkpointer) as preemption:
      while step < t.num_steps:
        batch = pending if pending is not None else next_batch()
        pending = None
        state, metrics = train_step(state, batch, frozen)
        nonfinite.add(metrics, step)  # reads the previous step's flag: no stall
        history.append(metrics)
        step += 1
        position += t.batch_size
        bar.update(1)
        if step % t.log_every == 0 or step == t.num_steps:
          means = {k: float(np.mean([float(m[k]) for m in jax.device_get(history)]))
                   for k in history[0]}
          means['steps_per_sec'] = len(history) / (time.time() - last_log)
          means['data/corrupt_images'] = getattr(data, 'num_corrupt', 0)
          means['nonfinite_total'] = nonfinite.total
          history, last_log = [], time.time()
          writer.scalars(step, means)
          bar.set_postfix(loss=f'{means["loss"]:.4f}')
          if is_main:
            rate = (step - start_step) / (time.time() - t_start)
            log.info('step %d/%d (%.2f it/s, ETA %s) %s', step, t.num_steps, rate,
                     _hms((t.num_steps - step) / max(rate, 1e-9)),
                     ' '.join(f'{k}={v:.4g}' for k, v in sorted(means.items())))
        if step % t.checkpoint_every == 0 or step == t.num_steps:
          save()
          saved_step = step
        if t.sample_every and (step % t.sample_every == 0 or step == t.num_steps):
          image_logger(step, state, batch, first_stage_params)
        if evaluator is not None and (step % t.eval_every == 0 or step == t.num_steps):
          _evaluate(evaluator, step, state, first_stage_params, writer, workdir)
        if step < t.num_steps and preemption.should_stop(step):
          if saved_step != step:
            save(force=True)
          checkpointer.wait()
          log.warning('preempted (SIGTERM): checkpoint saved at step %d in %s; run the same '
                      'command again to resume', step, checkpointer.directory)
          break
      nonfinite.flush()
  finally:
    bar.close()
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    if hasattr(data, 'close'):
      data.close()
  return state


def _evaluate(evaluator, step, state, first_stage_params, writer, workdir) -> None:
  """Sample FID during training: to TensorBoard, the log and WORKDIR/eval/training_eval.jsonl."""
  t0 = time.time()
  params = state.ema_params if state.ema_params is not None else state.params
  metrics = evaluator(params, first_stage_params, state.scale_factor)
  writer.scalars(step, metrics)
  if jax.process_index() == 0:
    log.info('step %d: %s (%d samples, %.0fs)', step,
             ' '.join(f'{k}={v:.4g}' for k, v in metrics.items()), evaluator.num, time.time() - t0)
    os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
    with open(os.path.join(workdir, 'eval', 'training_eval.jsonl'), 'a') as f:
      f.write(json.dumps({'step': step, 'num_samples': evaluator.num, **metrics}) + '\n')


class _NonfiniteCounter:
  """Counts steps whose update was skipped for NaN/Inf (metrics['nonfinite']), one step late so
  that reading the flag never waits for the device; raises after ``limit`` in a row."""

  def __init__(self, limit: int, directory: str):
    self.limit, self.directory = limit, directory
    self.total, self.streak, self._pending = 0, 0, None

  def add(self, metrics, step: int) -> None:
    self.flush()
    self._pending = (metrics['nonfinite'], step)

  def flush(self) -> None:
    if self._pending is None:
      return
    flag, step = self._pending
    self._pending = None
    if float(flag) == 0.0:
      self.streak = 0
      return
    self.total += 1
    self.streak += 1
    log.warning('step %d: loss or gradients are NaN/Inf; the update was skipped (%d in a row, '
                '%d in this run)', step, self.streak, self.total)
    if self.limit and self.streak >= self.limit:
      raise FloatingPointError(
          f'{self.streak} steps in a row had NaN/Inf loss or gradients (last: step {step}); '
          f'stopping. The parameters were not updated by them; the last checkpoint in '
          f'{self.directory} is good. Lower the learning rate, set optimizer.grad_clip_norm, or '
          f'check the data, then resume.')


def _build_latent_cache(config, ldm, first_stage_params, mesh):
  if config.data.source == 'tfds':
    raise ValueError('config.data.cache_latents needs a random-access source (digits or folder); '
                     'set --config.data.cache_latents=False for TFDS data')
  # replicated output: every process gets the whole cache (also with several processes)
  encode = jax.jit(lambda p, x: ldm.encode_moments(p, x).astype(jnp.float32),
                   out_shardings=sharding.replicated(mesh))
  batch_sh = sharding.batch_sharded(mesh)
  size = config.training.batch_size
  fn = lambda images: encode(first_stage_params, jax.device_put(images, batch_sh))
  source = make_source(config.data, ANNOTATIONS.get(task_of(config), ()))
  return encode_dataset(source, fn, size, config.data.random_flip)


class _ImageLogger:
  """PNG grids in WORKDIR/images: reconstructions (autoencoder) or samples (LDM, EMA weights)."""

  def __init__(self, config, mesh, model, ldm_stage, workdir, writer):
    self.config, self.mesh, self.model, self.ldm_stage = config, mesh, model, ldm_stage
    self.dir, self.writer = os.path.join(workdir, 'images'), writer
    n = config.training.num_sample_images
    self.n = max(mesh.size, n - n % mesh.size)
    self._fn = self._examples = None

  def __call__(self, step, state, batch, first_stage_params):
    params = state.ema_params if state.ema_params is not None else state.params
    if self.ldm_stage:
      grid = self._samples(step, params, state.scale_factor, first_stage_params)
      name = 'samples'
    else:
      grid = self._reconstructions(params, batch)
      name = 'reconstructions'
    if jax.process_index() == 0:
      save_png(os.path.join(self.dir, f'{name}_{step:07d}.png'), grid)
      self.writer.image(step, name, grid)

  def _samples(self, step, params, scale_factor, first_stage_params):
    c = self.config
    if self._fn is None:
      self._fn = training_generate_fn(c, self.model)
    if self._examples is None and c.cond_stage.kind not in ('none', 'class'):
      self._examples = condition_examples(c, self.n)  # fixed, shown next to the samples
    key = jax.random.fold_in(jax.random.PRNGKey(c.seed + 1), step)
    images, cond = draw_samples(c, self.mesh, self._fn, params, first_stage_params, scale_factor,
                                key, self.n, self._examples)
    if self._examples is None:
      return make_grid(images, nrow=_grid_rows(c))
    h, w = images.shape[1:3]
    # one row per example: condition | sample | original
    rows = np.stack([condition_tiles(c, cond, h, w), images,
                     np.asarray(to_uint8(self._examples['image']))], 1)
    return make_grid(rows.reshape((-1,) + rows.shape[2:]), nrow=3)

  def _reconstructions(self, params, batch):
    if self._fn is None:
      model = self.model
      self._fn = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
    x = batch['image'][:self.n]
    rec = self._fn(params, x)
    pairs = np.concatenate([sharding.to_host(to_uint8(x)), sharding.to_host(to_uint8(rec))],
                           axis=2)
    return make_grid(pairs, nrow=4)


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def _grid_rows(config) -> int:
  """Sample grids: one column per class (class models), else a square-ish grid."""
  return num_real_classes(config) or max(1, int(np.sqrt(config.training.num_sample_images)))
