"""One training run's loop and bookkeeping: steps, logging means, checkpoints, image grids,
evaluation, preemption and the step profiler (``train.loop`` builds what it starts from)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

from ldm_jax import runtime, storage
from ldm_jax.config import profile_steps
from ldm_jax.images import save_png
from ldm_jax.parallel import chips
from ldm_jax.train.nonfinite import NonfiniteCounter

log = logging.getLogger('ldm_jax')


@dataclasses.dataclass
class RunInputs:
  """What a run starts from: the (restored) state, the compiled step, the data, the frozen
  weights, the checkpoint it resumes (``latest``, None for a fresh run) and its data position."""

  state: Any
  train_step: Callable
  data: Any
  next_batch: Callable
  pending: Any  # a batch already read (first-batch hooks), trained on first
  frozen: Any
  latest: int | None
  data_state: dict
  evaluator: Any
  preemption: Any


class Run:
  """The loop's bookkeeping: logging means, checkpoints, grids, evaluation, preemption."""

  def __init__(self, config, stage, checkpointer, writer, workdir, first_stage_params, watchdog):
    self.config, self.stage, self.checkpointer = config, stage, checkpointer
    self.writer, self.workdir, self.first_stage_params = writer, workdir, first_stage_params
    self.watchdog = watchdog
    self.is_main = jax.process_index() == 0
    n, size = config.training.num_sample_images, stage.mesh.size
    self.grid_n = max(size, n - n % size)
    self.step_flops = None  # XLA's FLOPs of one device's step program (for the MFU)
    device = jax.local_devices()[0]
    self.peak = chips.peak_flops(
      device.device_kind, config.training.compute_dtype, config.training.peak_tflops
    )

  def loop(self, inputs: RunInputs):
    """Steps from the checkpoint's step (``latest``; iterations, skipped ones included: state.step
    counts the updates applied) to num_steps; returns the final state."""
    t, latest = self.config.training, inputs.latest
    self.state, self.step = inputs.state, latest or 0
    self.start_step, self.saved_step = self.step, latest
    self.position = inputs.data_state['position']
    self.nonfinite = NonfiniteCounter(
      t.max_nonfinite_steps, self.checkpointer, inputs.data_state['skipped_steps'], latest
    )
    self.history, self.t_start, self.last_log = [], time.time(), time.time()
    if inputs.preemption.requested:
      log.warning(
        'preempted (SIGTERM) while starting, before step %d: nothing to save (%s); run the '
        'same command again to resume',
        self.step,
        f'the newest checkpoint is step {latest}' if latest is not None else 'no checkpoint yet',
      )
      return self.state
    # The bar only on a terminal; logs (files, pipes) get one line per log_every steps instead.
    self.bar = tqdm(
      total=t.num_steps,
      initial=self.start_step,
      dynamic_ncols=True,
      mininterval=1.0,
      disable=not (self.is_main and sys.stderr.isatty()),
      desc=self.config.stage,
    )
    profiler = _StepProfiler(t.profile_steps, storage.join(self.workdir, 'profile'))
    pending = inputs.pending
    try:
      while self.step < t.num_steps:
        batch = pending if pending is not None else inputs.next_batch()
        pending = None
        self._train_step(inputs, batch, profiler)
        if self._after_step(inputs, batch):
          break
      self.nonfinite.flush()
    finally:
      profiler.close()
      self.bar.close()
    return self.state

  def _train_step(self, inputs: RunInputs, batch, profiler) -> None:
    if self.peak and self.step_flops is None:  # the MFU needs a known peak
      self.step_flops = _step_flops(inputs.train_step, self.state, batch, inputs.frozen) or 0.0
    profiler.before(self.step + 1)
    if self.step == self.start_step:
      self.watchdog.pause('compiling the training step')
    else:
      self.watchdog.progress(f'training step {self.step + 1}')
    self.state, metrics = inputs.train_step(self.state, batch, inputs.frozen)
    runtime.STARTING.clear()  # from now on SIGTERM saves a checkpoint, then exits
    profiler.after(self.step + 1, metrics)
    self.nonfinite.add(metrics, self.step)  # reads the previous step's flag: no stall
    self.history.append(metrics)
    self.step += 1
    self.position += self.config.training.batch_size
    self.bar.update(1)

  def _after_step(self, inputs: RunInputs, batch) -> bool:
    """Log, save, draw, evaluate as due after the step just taken; True: stop (preempted)."""
    t, step, watchdog = self.config.training, self.step, self.watchdog
    last = step == t.num_steps
    if step % t.log_every == 0 or last:
      watchdog.progress(f'logging step {step}')
      means = self._log(inputs.data)
      self.bar.set_postfix(loss=f'{means["loss"]:.4f}')
      self.history, self.last_log = [], time.time()
    if step % t.checkpoint_every == 0 or last:
      self._save()
    if t.sample_every and (step % t.sample_every == 0 or last):
      watchdog.progress(f'drawing the image grid of step {step}')
      self._grid(batch)
    if inputs.evaluator is not None and (step % t.eval_every == 0 or last):
      watchdog.progress(f'evaluating step {step}')
      self._evaluate(inputs.evaluator)
    if last or not inputs.preemption.should_stop(step):
      return False
    if self.saved_step != step:
      self._save(force=True)
    self.checkpointer.wait()
    log.warning(
      'preempted (SIGTERM): checkpoint saved at step %d in %s; run the same '
      'command again to resume',
      step,
      self.checkpointer.directory,
    )
    return True

  def _save(self, force: bool = False) -> None:
    step, nonfinite = self.step, self.nonfinite
    nonfinite.flush()  # a NaN streak protects its last good checkpoint before any rotation
    nonfinite.before_save(step)
    self.watchdog.progress(f'saving the checkpoint of step {step}')
    self.checkpointer.save(
      step,
      self.state,
      self.config,
      self.first_stage_params,
      force=force,
      data_state={
        'position': self.position,
        'global_batch': self.config.training.batch_size,
        'skipped_steps': nonfinite.total,
      },
    )
    self.saved_step = step

  def _log(self, data) -> dict:
    t, step, history, nonfinite = self.config.training, self.step, self.history, self.nonfinite
    means = {k: float(np.mean([float(m[k]) for m in jax.device_get(history)])) for k in history[0]}
    means['steps_per_sec'] = len(history) / (time.time() - self.last_log)
    means['data/corrupt_images'] = getattr(data, 'num_corrupt', 0)
    means['skipped_steps'] = nonfinite.total
    if self.step_flops and self.peak:
      means['perf/mfu'] = self.step_flops * means['steps_per_sec'] / self.peak
    means.update(_device_memory())
    self.writer.scalars(step, means)
    if self.is_main:
      rate = (step - self.start_step) / (time.time() - self.t_start)
      log.info(
        'step %d/%d (%.2f it/s, ETA %s) %s',
        step,
        t.num_steps,
        rate,
        _hms((t.num_steps - step) / max(rate, 1e-9)),
        ' '.join(f'{k}={v:.4g}' for k, v in sorted(means.items())),
      )
    return means

  def _grid(self, batch) -> None:
    """PNG grids in WORKDIR/images: reconstructions (autoencoder) or samples (LDM, EMA weights)."""
    step = self.step
    grid = self.stage.grid(step, self.state, batch, self.first_stage_params, self.grid_n)
    if self.is_main:
      name = self.stage.grid_name
      save_png(storage.join(self.workdir, 'images', f'{name}_{step:07d}.png'), grid)
      self.writer.image(step, name, grid)

  def _evaluate(self, evaluator) -> None:
    """Sample FID during training: to TensorBoard, the log and WORKDIR/eval/training_eval.jsonl."""
    t0, step, state = time.time(), self.step, self.state
    params = state.ema_params if state.ema_params is not None else state.params
    metrics = evaluator(params, self.first_stage_params, state.scale_factor)
    self.writer.scalars(step, metrics)
    if self.is_main:
      log.info(
        'step %d: %s (%d samples, %.0fs)',
        step,
        ' '.join(f'{k}={v:.4g}' for k, v in metrics.items()),
        evaluator.num,
        time.time() - t0,
      )
      storage.append_text(
        storage.join(self.workdir, 'eval', 'training_eval.jsonl'),
        json.dumps({'step': step, 'num_samples': evaluator.num, **metrics}) + '\n',
      )


def _step_flops(train_step, state, batch, frozen) -> float | None:
  """XLA's FLOP count of one device's training-step program (the lowered HLO's estimate: no
  second compile). With remat it counts the recomputation too (hardware FLOPs)."""
  try:
    cost = train_step.lower(state, batch, frozen).cost_analysis()
  except Exception:  # noqa: BLE001 - an estimate for the logs; never worth failing a run
    return None
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float((cost or {}).get('flops', 0.0))
  return flops or None


def _device_memory() -> dict:
  """GiB in use and the peak so far on this process's first device (GPU/TPU; CPUs keep none)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  out = {}
  if 'bytes_in_use' in stats:
    out['memory/in_use_gib'] = stats['bytes_in_use'] / 2**30
  if 'peak_bytes_in_use' in stats:
    out['memory/peak_gib'] = stats['peak_bytes_in_use'] / 2**30
  return out


class _StepProfiler:
  """config.training.profile_steps 'a,b': a jax.profiler trace of steps a..b (1-based) in
  WORKDIR/profile/ (each process its own file there); the last step is waited for before the trace
  stops, so its device work is in it."""

  def __init__(self, spec: str, directory: str):
    self.range, self.directory, self.active = profile_steps(spec), directory, False

  def before(self, step: int) -> None:
    if self.range and step == self.range[0] and not self.active:
      jax.profiler.start_trace(self.directory)
      self.active = True
      log.info('profiling steps %d-%d into %s', *self.range, self.directory)

  def after(self, step: int, metrics) -> None:
    if self.active and step >= self.range[1]:
      jax.block_until_ready(metrics)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      log.info(
        'profile written to %s (benchmarks/hlo_profile.py lists its top ops)', self.directory
      )


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
