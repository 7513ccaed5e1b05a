"""Scalars and image grids of a training run: TensorBoard event files (tensorboardX: no TensorFlow
in the training process) in WORKDIR/tensorboard and one JSON line per logged step in
WORKDIR/metrics.jsonl (``{"step": ..., "time": ..., "loss": ...}``: jq, pandas, a notebook).
Only process 0 writes. View with ``tensorboard --logdir WORKDIR/tensorboard``.

With ``config.training.wandb='entity/project'`` (and ``pip install wandb``) the same scalars and
images also go to a Weights & Biases run. Its id is kept in WORKDIR/wandb_run_id, so a run resumed
after preemption continues the same W&B run (``resume='allow'``); steps the interrupted run logged
after its last checkpoint are logged again, and W&B keeps its first values of those steps.
``WANDB_MODE=offline`` writes the run under WORKDIR/wandb (or $WANDB_DIR) for ``wandb sync``."""

from __future__ import annotations

import json
import math
import time

import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError

METRICS_FILE = 'metrics.jsonl'


class MetricWriter:
  def __init__(
    self,
    workdir: str,
    enabled: bool = True,
    start_step: int | None = None,
    wandb: str = '',
    config: dict | None = None,
  ):
    """``start_step``: a resumed run's checkpoint step; lines of steps after it (logged by the
    interrupted run before its checkpoint was overtaken) are dropped, so that each step appears
    once, as in an uninterrupted run. ``wandb``: a W&B project ('' = none); ``config``: the run's
    settings it records."""
    self.enabled = enabled
    self._writer = None
    self._wandb = open_wandb_run(workdir, wandb, config) if enabled and wandb else None
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
      if self._wandb is not None:
        self._wandb.log({k: float(v) for k, v in values.items()}, step=int(step))

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._writer.add_image(name, np.asarray(image), step, dataformats='HWC')
      if self._wandb is not None:
        import wandb

        self._wandb.log({name: wandb.Image(np.asarray(image))}, step=int(step))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    if self._wandb is not None:
      self._wandb.finish()
      self._wandb = None


WANDB_ID_FILE = 'wandb_run_id'


def open_wandb_run(workdir: str, project: str, config: dict | None):
  """The workdir's W&B run: created on the first call, resumed (same id) after that."""
  import os
  import secrets

  try:
    import wandb
  except ImportError as e:
    raise UserError(
      f'config.training.wandb={project!r} but wandb is not installed: pip install wandb '
      "(or set --config.training.wandb='' to log to TensorBoard and metrics.jsonl only)"
    ) from e
  entity, _, name = project.rpartition('/')
  id_file = storage.join(workdir, WANDB_ID_FILE)
  if storage.exists(id_file):
    run_id = storage.read_text(id_file).strip()
  else:
    run_id = secrets.token_hex(4)
    storage.write_text(id_file, run_id + '\n')
  local = os.environ.get('WANDB_DIR') or (None if storage.is_url(workdir) else workdir)
  return wandb.init(
    project=name,
    entity=entity or None,
    id=run_id,
    resume='allow',
    name=os.path.basename(str(workdir).rstrip('/')),
    dir=local,
    config=config,
  )


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
