"""Scalars and image grids to TensorBoard event files (tensorboardX: no TensorFlow in the training
process); only process 0 writes. View with `tensorboard --logdir WORKDIR/tensorboard`."""

from __future__ import annotations

import numpy as np

from ldm_jax import storage


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter

      self._writer = SummaryWriter(storage.join(workdir, 'tensorboard'), flush_secs=30)

  def scalars(self, step: int, values: dict) -> None:
    if self.enabled:
      for k, v in values.items():
        self._writer.add_scalar(k, float(v), step)

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self._writer.add_image(name, np.asarray(image), step, dataformats='HWC')

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
