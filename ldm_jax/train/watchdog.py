"""No silent hangs in a training job: a watchdog thread ends the process when the job makes no
progress (a read, a step, a save, a log line, an evaluation) for
``config.training.stall_timeout_s`` (compiles and other pure computation at start-up are not
timed: ``pause``), and
a background thread (Orbax's save, TensorBoard's writer, the data workers) that dies with an
exception ends it too, instead of leaving a job that holds its workdir and does nothing. Both exit
with STALLED_EXIT and one ``error:`` line; the next launch resumes from the newest complete
checkpoint, which is what a scheduler's restart does."""

from __future__ import annotations

import threading
import time
import traceback

from ldm_jax import runtime

STALLED_EXIT = 3  # the job ended itself: stalled or a background thread failed; relaunch resumes


class Watchdog:
  """``progress(what)`` whenever the job moves; after ``timeout_s`` without a call (0: never),
  the process ends (runtime.exit_now). ``status()`` is what the workdir lock's heartbeat carries,
  so that the lock shows progress, not only a live process."""

  def __init__(self, timeout_s: float, resume_hint: str = ''):
    self.timeout_s, self.resume_hint = float(timeout_s), resume_hint
    self.what, self._last = 'starting', time.monotonic()
    self._wall = time.time()
    self._stop = threading.Event()
    self._paused = False
    self._previous_hook = None
    if self.timeout_s > 0:
      threading.Thread(target=self._watch, daemon=True, name='ldm_jax-watchdog').start()

  def progress(self, what: str) -> None:
    """The job moved and now does ``what`` (also the phase a SIGTERM while starting names)."""
    self.what, self._last, self._wall = what, time.monotonic(), time.time()
    self._paused = False
    runtime.starting(what)

  def pause(self, what: str) -> None:
    """Until the next progress(): no limit (the first step's XLA compile, which does no I/O and
    may take long on a big model; the lock's heartbeat still shows what the job does)."""
    self.progress(what)
    self._paused = True

  def status(self) -> dict:
    return {'doing': self.what, 'progress_time': round(self._wall, 3)}

  def _watch(self) -> None:
    while not self._stop.wait(min(1.0, self.timeout_s / 4)):
      idle = time.monotonic() - self._last
      if idle > self.timeout_s and not self._paused:
        runtime.exit_now(
          STALLED_EXIT,
          f'error: no progress for {idle:.0f} s while {self.what} '
          f'(config.training.stall_timeout_s={self.timeout_s:g}; a stalled storage or network '
          'is the usual cause): ending the run. Run the same command again to resume from the '
          f'newest complete checkpoint{self.resume_hint}.',
        )

  def fatal_thread_errors(self) -> None:
    """From now until close(): an exception that ends a background thread ends the process."""
    self._previous_hook = threading.excepthook

    def hook(args):
      if args.exc_type is SystemExit:
        return
      if self._previous_hook is not None:  # the disk-full line, or the traceback
        self._previous_hook(args)
      name = args.thread.name if args.thread is not None else '?'
      where = ''.join(traceback.format_exception_only(args.exc_type, args.exc_value)).strip()
      runtime.exit_now(
        STALLED_EXIT,
        f'error: a background thread of the training job ({name}) failed while {self.what}: '
        f'{where[:500]}. Ending the run; run the same command again to resume from the newest '
        f'complete checkpoint{self.resume_hint}.',
      )

    threading.excepthook = hook

  def close(self) -> None:
    self._stop.set()
    if self._previous_hook is not None:
      threading.excepthook = self._previous_hook
      self._previous_hook = None
