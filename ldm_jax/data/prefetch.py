"""Reading ahead: batches produced in a background thread (``Prefetch``), and the next global
batch's host-to-device copy issued while the current step runs (``DevicePrefetch``)."""

from __future__ import annotations

import queue
import threading
from typing import Iterator


class Prefetch:
  """Produce the next ``size`` batches in a background thread; errors surface in ``next``."""

  def __init__(self, iterator: Iterator, size: int = 2):
    self.iterator, self._queue = iterator, queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _run(self):
    while not self._stop.is_set():
      try:
        item = ('ok', next(self.iterator))
      except BaseException as e:  # pylint: disable=broad-except
        item = ('error', e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[0] == 'error':
        return

  def __iter__(self):
    return self

  def __next__(self):
    kind, value = self._queue.get()
    if kind == 'error':
      raise value
    return value

  @property
  def num_corrupt(self) -> int:
    return getattr(self.iterator, 'num_corrupt', 0)

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)
    if hasattr(self.iterator, 'close'):
      self.iterator.close()


class DevicePrefetch:
  """``fetch()`` one global batch ahead: handing out batch k issues batch k+1's host-to-device copy
  (asynchronous in JAX), so that copy overlaps step k. An error while fetching batch k+1 is raised
  when batch k+1 is asked for, as without the prefetch."""

  def __init__(self, fetch):
    self.fetch, self._next, self._error = fetch, None, None

  def __call__(self):
    if self._error is not None:
      error, self._error = self._error, None
      raise error
    batch = self._next if self._next is not None else self.fetch()
    self._next = None
    try:
      self._next = self.fetch()
    except Exception as e:  # pylint: disable=broad-except
      self._error = e
    return batch
