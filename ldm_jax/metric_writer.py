"""Scalars to TensorBoard (tf.summary, CPU only) and to the log; only process 0 writes."""
from __future__ import annotations

import logging
import os

import numpy as np

log = logging.getLogger('ldm_jax')


class MetricWriter:
  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._writer = None
    if enabled:
      from ldm_jax.data.tfds_source import import_tf
      tf = import_tf()
      self._tf = tf
      self._writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def scalars(self, step: int, values: dict) -> None:
    if not self.enabled:
      return
    with self._writer.as_default(step=step):
      for k, v in values.items():
        self._tf.summary.scalar(k, float(v))
    self._writer.flush()

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if not self.enabled:
      return
    with self._writer.as_default(step=step):
      self._tf.summary.image(name, np.asarray(image)[None], max_outputs=1)
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
