"""The NaN/Inf guard of the training loop: counts skipped updates and stops a diverging run,
naming (and keeping) the checkpoint to go back to."""

from __future__ import annotations

import logging

from ldm_jax.errors import UserError

log = logging.getLogger('ldm_jax')


class TrainingDiverged(UserError, FloatingPointError):
  """Too many NaN/Inf steps in a row; the message names the checkpoint to go back to."""


class NonfiniteCounter:
  """Counts steps whose update was skipped for NaN/Inf (metrics['nonfinite']), one step late so
  that reading the flag never waits for the device; raises after ``limit`` in a row.

  A diverging run's last finite update is often the one that blew the weights up (NaN shows one
  step later), so the checkpoint to go back to is the newest one from before that update: while a
  streak lasts it is kept whatever keep_checkpoints says, and named. So that one exists, the
  checkpoint before the newest is held (one more on disk) until the step after the newest turns out
  finite."""

  def __init__(self, limit: int, checkpointer, total: int = 0, latest: int | None = None):
    """``latest``: the step of the newest checkpoint when the run (re)starts, None for none."""
    self.limit, self.checkpointer = limit, checkpointer
    self.total, self.streak, self._pending = total, 0, None
    self.last_saved = latest
    self.good = None  # (the streak's) newest checkpoint from before its last finite update
    self.held = None  # the checkpoint before the newest, held until the newest is confirmed
    self.newest = None  # the newest checkpoint's step while its next update is unknown

  def add(self, metrics, step: int) -> None:
    self.flush()
    self._pending = (metrics['nonfinite'], step)

  def before_save(self, step: int) -> None:
    """Called before the checkpoint of ``step`` (updates applied) is written."""
    previous, self.last_saved = self.last_saved, step
    if self.limit and self.streak == 0:
      self._release_held()
      if previous is not None:
        self.held = previous
        self.checkpointer.protected.add(self.held)
      self.newest = step

  def _release_held(self) -> None:
    if self.held is not None and self.held != self.good:
      self.checkpointer.protected.discard(self.held)
    self.held = None

  def flush(self) -> None:
    if self._pending is None:
      return
    flag, step = self._pending  # step: 0-based, the update of step + 1 (as the log counts)
    self._pending = None
    if float(flag) == 0.0:
      if self.streak:
        self.checkpointer.protected.discard(self.good)
        self.good = None
      if self.newest is not None and step >= self.newest:  # the update after it is finite
        self._release_held()
        self.newest = None
      self.streak = 0
      return
    if self.streak == 0:
      # updates 1..step were finite, the last of them maybe huge: a checkpoint of fewer
      # than `step` updates holds none of it
      before = [s for s in self.checkpointer.all_steps() if s < step]
      self.good = before[-1] if before else None
      if self.good is not None:
        self.checkpointer.protected.add(self.good)
    self.total += 1
    self.streak += 1
    log.warning(
      'step %d: loss or gradients are NaN/Inf; the update was skipped (%d in a row, '
      '%d in this run)',
      step + 1,
      self.streak,
      self.total,
    )
    if self.limit and self.streak >= self.limit:
      directory = self.checkpointer.directory
      first = step - self.streak + 2
      if self.good is None:
        back = (
          'No checkpoint was written before it: start over in a new --workdir with a lower '
          'learning rate or optimizer.grad_clip_norm.'
        )
      else:
        back = (
          f'The newest checkpoint from before the last finite update (step {first - 1}, which '
          f'may have blown the weights up) is {directory}/{self.good} (kept); the later ones '
          'hold the parameters that led here. To resume from it, move the newer step folders '
          f'out of {directory}, then lower the learning rate, set optimizer.grad_clip_norm, or '
          'check the data.'
        )
      raise TrainingDiverged(
        f'stopping: {self.streak} steps in a row (from step {first}) had NaN/Inf loss or '
        f'gradients; their updates were skipped. {back}'
      )
