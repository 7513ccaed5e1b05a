"""Scalars and image grids of a training run: TensorBoard event files (tensorboardX: no TensorFlow
in the training process) in WORKDIR/tensorboard and one JSON line per logged step in
WORKDIR/metrics.jsonl (``{"step": ..., "time": ..., "loss": ...}``: jq, pandas, a notebook).
Only process 0 writes. View with ``tensorboard --logdir WORKDIR/tensorboard``."""

from __future__ import annotations

import json
import math
import time

import numpy as np

from ldm_jax import storage

METRICS_FILE = 'metrics.jsonl'


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True, start_step: int | None = None):
    """``start_step``: a resumed run's checkpoint step; lines of steps after it (logged by the
    interrupted run before its checkpoint was overtaken) are dropped, so that each step appears
    once, as in an uninterrupted run."""
    self.enabled = enabled
    self._writer = None
    self._jsonl = storage.join(workdir, METRICS_FILE)
    if enabled:
      from tensorboardX import SummaryWriter

      self._writer = SummaryWriter(storage.join(workdir, 'tensorboard'), flush_secs=30)
      if start_step is not None and storage.exists(self._jsonl):
        kept = [
          line
          for line in storage.read_text(self._jsonl).splitlines(keepends=True)
          if line.strip() and _step_of(line) <= start_step
        ]
        storage.write_text(self._jsonl, ''.join(kept))

  def scalars(self, step: int, values: dict) -> None:
    if self.enabled:
      for k, v in values.items():
        self._writer.add_scalar(k, float(v), step)
      line = {'step': int(step), 'time': round(time.time(), 3)}
      line.update({k: _json_number(v) for k, v in values.items()})
      storage.append_text(self._jsonl, json.dumps(line) + '\n')

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._writer.add_image(name, np.asarray(image), step, dataformats='HWC')

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _json_number(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)  # JSON has no NaN/Inf: "nan", "inf"


def _step_of(line: str) -> int:
  try:
    return int(json.loads(line)['step'])
  except (ValueError, KeyError, TypeError):
    return 1 << 62  # a torn last line of a killed run: dropped


def read_metrics(workdir: str) -> list[dict]:
  """The lines of WORKDIR/metrics.jsonl (a torn last line of a killed run skipped)."""
  path = storage.join(workdir, METRICS_FILE)
  out = []
  for line in storage.read_text(path).splitlines() if storage.exists(path) else []:
    try:
      out.append(json.loads(line))
    except ValueError:
      continue
  return out
