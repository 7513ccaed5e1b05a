"""Nothing hangs: SIGTERM while a job starts ends it at once, a stalled writer or a failed
background thread ends the job with one error line and the relaunch resumes (the stalled bucket:
tests/test_gcs.py). README, "Failure behaviour"."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT, run_cli
from tests.test_failures import FAST, autoencoder

pytestmark = pytest.mark.slow


def _start(workdir, *extra):
  return subprocess.Popen(
    [sys.executable, *autoencoder(workdir, *extra)],
    cwd=ROOT,
    env=dict(os.environ, **FAST),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )


@pytest.mark.parametrize(
  'after, phase',
  [
    ('JAX ', 'while starting ('),  # log_backend: before the model is built, restored, compiled
    ('stage=', 'while starting (compiling the training step)'),  # the first step's compile
  ],
)
def test_sigterm_while_starting_exits_at_once_whatever_the_phase(tmp_path, after, phase):
  """A SIGTERM before the first step has run ends the process within seconds, exit 0 (the
  Kubernetes and SLURM grace periods are 30 s), even inside the first step's compile, where
  Python's own signal handler would not run until XLA returns; nothing is saved (nothing is new)
  and the lock is released."""
  workdir = str(tmp_path / 'ae')
  proc = _start(workdir, '--config.training.num_steps=4')
  seen = ''
  while after not in seen:
    line = proc.stderr.readline()
    assert line, seen[-3000:]
    seen += line
  t0 = time.time()
  proc.send_signal(signal.SIGTERM)
  seen += proc.communicate(timeout=300)[1]
  waited = time.time() - t0
  assert proc.returncode == 0, seen[-3000:]
  assert f'preempted (SIGTERM) {phase}' in seen and 'Traceback' not in seen, seen[-3000:]
  assert waited < 20, waited  # (before: after the compile, the first step and a checkpoint)
  assert not os.path.exists(os.path.join(workdir, 'checkpoints', '1'))
  assert not os.path.exists(os.path.join(workdir, 'lock.json'))


def test_a_stalled_writer_ends_the_run_with_one_line_and_the_relaunch_resumes(tmp_path):
  """An injected stall: WORKDIR/metrics.jsonl is a FIFO nobody reads, so the first log line's
  write blocks forever, as a write to a stalled bucket does. The watchdog ends the job after
  stall_timeout_s with exit 3, one error line naming what it was doing, and the lock released;
  the same command, once the stall is gone, resumes from the checkpoint and finishes."""
  workdir = tmp_path / 'ae'
  workdir.mkdir()
  os.mkfifo(workdir / 'metrics.jsonl')
  args = ['--config.training.num_steps=4', '--config.training.checkpoint_every=1']
  args += ['--config.training.log_every=2', '--config.training.stall_timeout_s=5']
  t0 = time.time()
  r = run_cli(*autoencoder(str(workdir), *args), env=FAST, timeout=600)
  assert r.returncode == 3, r.stderr[-3000:]
  errors = [x for x in r.stderr.splitlines() if x.startswith('error: ')]
  assert len(errors) == 1 and 'no progress for' in errors[0], r.stderr[-3000:]
  assert 'while logging step 2' in errors[0] and 'resume' in errors[0]
  assert time.time() - t0 < 300
  assert not (workdir / 'lock.json').exists()
  os.remove(workdir / 'metrics.jsonl')  # the storage is back
  r = run_cli(*autoencoder(str(workdir), *args), env=FAST)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'at step 2' in r.stderr or 'at step 1' in r.stderr, r.stderr[-3000:]
  assert sorted(int(d) for d in os.listdir(workdir / 'checkpoints'))[-1] == 4


def test_a_failed_background_thread_ends_the_job(tmp_path):
  """A writer or save thread that dies (TensorBoard's writer after a 412 from the bucket, Orbax's
  signalling thread) ends the job with exit 3 and one error line instead of leaving it running."""
  code = (
    'import threading, time\n'
    'from ldm_jax.train.watchdog import Watchdog\n'
    'w = Watchdog(0); w.progress("training step 7"); w.fatal_thread_errors()\n'
    'def fail(): raise ConnectionError("412 Precondition Failed")\n'
    'threading.Thread(target=fail, name="writer").start()\n'
    'time.sleep(60)\n'
  )
  r = run_cli('-c', code, timeout=120)
  assert r.returncode == 3, r.stderr[-3000:]
  errors = [x for x in r.stderr.splitlines() if x.startswith('error: ')]
  assert len(errors) == 1, r.stderr[-3000:]
  assert '(writer) failed while training step 7: ConnectionError: 412' in errors[0]
