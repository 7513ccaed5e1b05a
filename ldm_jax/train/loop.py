"""The training loop: build mesh, stage, state; restore; loop (step, log, checkpoint, grid,
evaluate); finish. What differs between the autoencoder and the LDM lives in their stage objects
(``train.autoencoder_stage``, ``train.ldm_stage``).

One jitted step over a ('data', 'fsdp') Mesh: the global batch is sharded over all devices, the
state is replicated or FSDP-sharded (config.mesh; GSPMD inserts the collectives). Works unchanged
on 1 CPU, 8 GPUs or a multi-host pod slice. Nothing is lost: checkpoints hold the state, the
frozen first stage and the data position; a run resumes from the newest readable one; SIGTERM
(preemption) saves at the current step and exits cleanly; NaN/Inf updates are skipped.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import runtime, storage
from ldm_jax.config import ConfigError, learning_rate, validate
from ldm_jax.data.prefetch import DevicePrefetch
from ldm_jax.nn import layers
from ldm_jax.parallel import sharding
from ldm_jax.parallel.distributed import Preemption
from ldm_jax.train.autoencoder_stage import AutoencoderStage
from ldm_jax.train.dreambooth import prepare_class_images
from ldm_jax.train.ldm_stage import LDMStage, load_init_source
from ldm_jax.train.lock import lock_workdir
from ldm_jax.train.metric_writer import MetricWriter
from ldm_jax.train.run import Run, RunInputs
from ldm_jax.train.state import TrainState
from ldm_jax.train.step_common import guard_nonfinite
from ldm_jax.train.watchdog import Watchdog

log = logging.getLogger('ldm_jax')

STAGES = {'autoencoder': AutoencoderStage, 'ldm': LDMStage}


def make_stage(config, mesh):
  """The stage object of config.stage (an LDM with config.lora.rank > 0: LoRAStage)."""
  if config.stage == 'ldm' and config.get('lora') and config.lora.rank > 0:
    from ldm_jax.train.lora_stage import LoRAStage

    return LoRAStage(config, mesh)
  return STAGES[config.stage](config, mesh)


def _restore_or_create(config, stage, mesh, checkpointer, key, watchdog):
  """(state, its shardings, first-stage params, newest step or None, data state: the position
  and the count of skipped steps). The watchdog times the reads, not the compiles."""
  t = config.training
  watchdog.progress('restoring the newest checkpoint')
  abstract = jax.eval_shape(stage.init_state, key)
  state_sh = sharding.state_shardings(abstract, mesh, config.mesh)
  abstract_fs = stage.first_stage_shapes()
  restored = checkpointer.restore_newest_readable(
    config, sharding.with_shardings(abstract, state_sh), abstract_fs
  )
  if restored is not None:
    latest, state, first_stage_params, data_state = restored
    log.info('resumed from %s at step %d', checkpointer.directory, latest)
    if state.opt_state is None:  # a converted workdir: no optimizer state was saved
      log.info('the checkpoint holds no optimizer state: the optimizer starts fresh')
      init = jax.jit(stage.tx.init, out_shardings=state_sh.opt_state)
      state = state.replace(opt_state=init(state.params))
  else:
    latest, data_state = None, None
    watchdog.pause('initialising the model')
    state = jax.jit(stage.init_state, out_shardings=state_sh)(key)
    watchdog.progress('reading the initial weights')
    if t.get('init_from'):  # a stage may start from it its own way (LoRA: the frozen base)
      init = getattr(stage, 'init_from', None)
      state = init(state, state_sh) if init else _init_from(config, state, state_sh)
    first_stage_params = stage.load_first_stage()
  # The data position: examples consumed by the job (older checkpoints: steps x batch size).
  data_state = dict(data_state or {})
  data_state.setdefault('position', (latest or 0) * t.batch_size)
  data_state.setdefault('skipped_steps', 0)
  return state, state_sh, first_stage_params, latest, data_state


def _init_from(config, state: TrainState, state_sh) -> TrainState:
  """``state`` with the parameters (EMA: the source's EMA, else a copy of its parameters) and
  scale factor of config.training.init_from's newest checkpoint; step 0, optimizer fresh."""
  path = config.training.init_from
  step, raw = load_init_source(config)
  put = lambda tree, sh: jax.device_put(jax.tree.map(jnp.asarray, tree), sh)
  parts = [p.strip() for p in config.training.get('init_parts', '').split(',') if p.strip()]
  unknown = [p for p in parts if p not in state.params]
  if unknown:
    raise ConfigError(
      f'config.training.init_parts names {unknown}: the parameters are {sorted(state.params)}'
    )
  take = lambda src, own: {k: src[k] if not parts or k in parts else own[k] for k in own}
  params = put(take(raw['params'], jax.device_get(state.params)), state_sh.params)
  ema = None
  if state.ema_params is not None:
    src = raw.get('ema_params') if raw.get('ema_params') is not None else raw['params']
    ema = put(take(src, jax.device_get(state.ema_params)), state_sh.ema_params)
  log.info(
    'initialised from %s (step %d): %s%s',
    path,
    step,
    ', '.join(parts) if parts else 'parameters',
    ', EMA' if ema else '',
  )
  return state.replace(
    params=params,
    ema_params=ema,
    scale_factor=put(np.float32(raw.get('scale_factor', 1.0)), state_sh.scale_factor),
  )


def jit_train_step(stage, mesh, state_sh, frozen_sh):
  """The one jitted training step of a stage: (state, batch, frozen) -> (state, metrics), the batch
  sharded over the mesh, the state donated. train() runs it; ``python -m ldm_jax.aot`` compiles
  it for a TPU topology. Traced under ``layers.lowering(mesh=mesh)``: per-device kernels (the
  Pallas TPU attention) run on the batch shards."""
  guarded = guard_nonfinite(stage.step)

  def step(state, batch, frozen):
    with layers.lowering(mesh=mesh):
      return guarded(state, batch, frozen)

  return jax.jit(
    step,
    in_shardings=(state_sh, sharding.batch_sharded(mesh), frozen_sh),
    out_shardings=(state_sh, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )


def require_optional_packages(config) -> None:
  """One error line before any work when the config asks for an optional package that is not
  installed (the W&B writer, the Inception weights of the in-training FID)."""
  from ldm_jax import optional
  from ldm_jax.eval.inception_weights import require_weights

  t = config.training
  if t.wandb:
    optional.require('wandb', f'config.training.wandb={t.wandb!r}')
  if t.eval_every:
    require_weights(t.eval_inception, 'config.training.eval_every (FID during training)')


def train(config, workdir: str, *, exit_on_hang: bool = False) -> TrainState:
  """Train ``config`` in ``workdir`` (resuming from its newest checkpoint). ``exit_on_hang``
  (train.py's): a stall of training.stall_timeout_s or a failed background thread ends the
  process (exit 3; the next launch resumes), instead of a notebook's kernel being ended."""
  validate(config)
  require_optional_packages(config)
  t = config.training
  mesh = sharding.make_mesh(config.mesh)  # the mesh and batch checks: before any work
  sharding.check_batch_size(t.batch_size, mesh, t.grad_accum_steps)
  workdir = storage.resolve(workdir)
  storage.check_writable_dir(workdir, '--workdir')
  timeout = config.training.get('stall_timeout_s', 0.0) if exit_on_hang else 0.0
  watchdog = Watchdog(timeout, f' in {workdir}')
  if exit_on_hang:
    watchdog.fatal_thread_errors()
  try:
    with Preemption() as preemption:  # SIGTERM from here on: stop cleanly
      watchdog.progress('taking the workdir lock')
      lock = lock_workdir(workdir)
      if lock is not None:
        lock.status = watchdog.status
        runtime.at_early_exit(lock.abandon)
      try:
        return _train(config, workdir, mesh, preemption, watchdog)
      finally:
        if lock is not None:
          lock.release()
          runtime.forget_early_exit(lock.abandon)
  finally:
    watchdog.close()
    runtime.STARTING.clear()


def _train(config, workdir: str, mesh, preemption, watchdog) -> TrainState:
  t = config.training
  key = jax.random.PRNGKey(config.seed)
  watchdog.pause('building the model')
  stage = make_stage(config, mesh)
  watchdog.progress('opening the checkpoints')
  checkpointer = ckpt_lib.Checkpointer(
    workdir, t.keep_checkpoints, t.async_checkpoints, t.keep_every
  )
  preemption.checkpointer = checkpointer
  try:
    state, state_sh, first_stage_params, latest, data_state = _restore_or_create(
      config, stage, mesh, checkpointer, key, watchdog
    )
  except BaseException:
    checkpointer.close()  # its background threads end before the interpreter does
    raise
  frozen, frozen_sh = stage.frozen(first_stage_params)
  prepare_class_images(config, workdir, watchdog)  # config.dreambooth's prior preservation
  watchdog.pause('setting up the data')  # (may encode a dataset into latents: compute)
  data = stage.train_iterator(data_state['position'], first_stage_params, state.params)
  next_batch = DevicePrefetch(lambda: sharding.global_batch(next(data), mesh))
  pending = None
  if latest is None:  # first-batch hooks (scale_by_std, ActNorm) of a fresh run
    watchdog.progress('reading the first batch')
    state, pending = stage.first_batch(state, next_batch, key, first_stage_params)
  state = jax.device_put(state, state_sh)
  train_step = jit_train_step(stage, mesh, state_sh, frozen_sh)
  writer = MetricWriter(
    workdir,
    enabled=jax.process_index() == 0,
    start_step=latest,
    wandb=config.training.wandb,
    config=config.to_dict(),
  )
  evaluator = stage.evaluator(workdir)
  watchdog.pause('compiling the training step')  # (at the first step's call)
  _log_start(config, mesh, latest or 0)
  run = Run(config, stage, checkpointer, writer, workdir, first_stage_params, watchdog)
  inputs = RunInputs(
    state, train_step, data, next_batch, pending, frozen, latest, data_state, evaluator, preemption
  )
  try:
    state = run.loop(inputs)
  finally:
    watchdog.progress('finishing the checkpoint writes')
    checkpointer.wait()
    checkpointer.close()
    writer.close()
    if hasattr(data, 'close'):
      data.close()
  return state


def _log_start(config, mesh, start_step: int) -> None:
  if jax.process_index() != 0:
    return
  t = config.training
  log.info(
    'stage=%s devices=%d (mesh %s) processes=%d global batch=%d%s lr=%.3g steps %d -> %d',
    config.stage,
    mesh.size,
    dict(mesh.shape),
    jax.process_count(),
    t.batch_size,
    f' ({t.grad_accum_steps} micro-batches)' if t.grad_accum_steps > 1 else '',
    learning_rate(config),
    start_step,
    t.num_steps,
  )
