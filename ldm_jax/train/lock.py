"""One training job per workdir: WORKDIR/lock.json names the job that holds it (host, pid, start)
and carries a heartbeat that a thread refreshes every few seconds. A second ``train.py`` on the
same workdir refuses to start with a message naming the holder; a lock left by a killed job never
blocks a relaunch (preemption relaunches are the normal case): on the holder's host a dead pid
frees it at once, from another host a heartbeat that stops for ``STALE_S`` seconds does. Works on
any path ``storage`` writes (a shared disk, gs://). A multi-process job takes one lock, on process
0, and every process hears the verdict."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

import jax
import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError

log = logging.getLogger('ldm_jax')

HEARTBEAT_S = 5.0
STALE_S = 30.0  # no heartbeat for this long: the holder is gone


class WorkdirLocked(UserError):
  """Another job is training in this workdir."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process
    return True
  return True


class WorkdirLock:
  def __init__(self, workdir: str):
    self.path = storage.join(workdir, 'lock.json')
    self.token = uuid.uuid4().hex
    self.info = {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'started': time.strftime('%Y-%m-%d %H:%M:%S'),
      'token': self.token,
    }
    self._stop = threading.Event()
    self._thread = None
    self.status = lambda: {}  # what the job is doing (train.watchdog), written with each beat

  def _read(self) -> dict | None:
    try:
      return json.loads(storage.read_text(self.path))
    except (OSError, ValueError):  # none, or half-written by a killed writer
      return None

  def _write(self) -> None:
    beat = {**self.info, **self.status(), 'heartbeat': time.time()}
    storage.write_text(self.path, json.dumps(beat))

  def _holder_alive(self, holder: dict) -> bool:
    """Whether the job named in ``holder`` still runs: its pid on this host; elsewhere, whether its
    heartbeat moves within STALE_S (a heartbeat older than that at first sight: gone)."""
    if holder.get('host') == self.info['host']:
      return _pid_alive(int(holder.get('pid', -1)))
    beat = holder.get('heartbeat', 0)
    if time.time() - beat > STALE_S:
      return False
    deadline = time.time() + STALE_S
    while time.time() < deadline:
      time.sleep(1.0)
      now = self._read()
      if now is None or now.get('token') != holder.get('token'):
        return False  # released, or taken over by someone else (who then holds it)
      if now.get('heartbeat') != beat:
        return True
    return False

  def acquire(self) -> None:
    holder = self._read()
    if holder is not None and holder.get('token') != self.token and self._holder_alive(holder):
      raise WorkdirLocked(
        f'{os.path.dirname(self.path)} is in use by another training job (host '
        f'{holder.get("host")}, pid {holder.get("pid")}, started {holder.get("started")}): '
        'stop that one first, or train in another --workdir'
      )
    if holder is not None and holder.get('token') != self.token:
      log.warning(
        'taking over the lock of a job that is gone (host %s, pid %s, started %s)',
        holder.get('host'),
        holder.get('pid'),
        holder.get('started'),
      )
    self._write()
    time.sleep(0.2)  # two jobs that started together: the last writer wins, the other sees it
    now = self._read()
    if now is None or now.get('token') != self.token:
      other = now or {}
      raise WorkdirLocked(
        f'{os.path.dirname(self.path)} was just taken by another training job (host '
        f'{other.get("host")}, pid {other.get("pid")}); train in another --workdir'
      )
    self._thread = threading.Thread(target=self._beat, daemon=True, name='ldm_jax-lock')
    self._thread.start()

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self._write()
      except OSError as e:  # a full disk or a flaky bucket: the next beat tries again
        log.warning('could not refresh %s: %s', self.path, e)

  def abandon(self) -> None:
    """Release without waiting for the heartbeat thread (the process is about to end)."""
    self._stop.set()
    now = self._read()
    if now is not None and now.get('token') == self.token:
      storage.remove(self.path)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
      now = self._read()
      if now is not None and now.get('token') == self.token:
        storage.remove(self.path)


def lock_workdir(workdir: str) -> WorkdirLock | None:
  """Process 0 takes the workdir's lock; every process raises WorkdirLocked if it could not. The
  caller releases the returned lock (None on the other processes)."""
  lock, error = None, ''
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir)
    try:
      lock.acquire()
    except WorkdirLocked as e:
      error = str(e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    failed = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
    if int(failed) and not error:
      error = f'{workdir} is in use by another training job (see process 0)'
  if error:
    raise WorkdirLocked(error)
  return lock
