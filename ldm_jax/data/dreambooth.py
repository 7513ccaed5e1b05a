"""DreamBooth's training data (Ruiz et al. 2023; ``config.dreambooth``): the instance images, each
captioned with the instance prompt ("a photo of sks dog"), and for prior preservation the class
images the base model drew for the class prompt ("a photo of a dog"; ``train/dreambooth.py``).

The two are interleaved, instance and class by turns (index 2k: instance k, 2k + 1: class k, each
cycling over its own images), so that an epoch draws as many of one as of the other, as diffusers'
script pairs one class image with each instance image. Each example carries ``loss_weight``: 2
for an instance image and 2 x ``prior_loss_weight`` for a class image, so that the batch mean of
the weighted loss is the script's instance loss + prior_loss_weight x prior loss when the batch
holds as many of each (in expectation otherwise). Without class images every weight is 1.
"""

from __future__ import annotations

import os

import numpy as np

from ldm_jax.data.sources import DataError


class DreamBoothSource:
  def __init__(self, instance, prompt: str, classes=None, class_prompt: str = '', weight=1.0):
    if len(instance) == 0:
      raise DataError('config.dreambooth: the instance folder (config.data.path) has no images')
    if classes is not None and len(classes) == 0:
      raise DataError('config.dreambooth: no class images were found (num_class_images > 0)')
    self.instance, self.classes = instance, classes
    self.prompt, self.class_prompt, self.weight = prompt, class_prompt, float(weight)

  def __len__(self):
    if self.classes is None:
      return len(self.instance)
    return 2 * max(len(self.instance), len(self.classes))

  def __getattr__(self, name):  # key, in_memory, ...: the instance source's
    if name in ('instance', 'classes'):
      raise AttributeError(name)
    return getattr(self.instance, name)

  def load(self, index: int, flip: bool = False, **kw) -> dict:
    if self.classes is None:
      example = self.instance.load(index, flip, **kw)
      return {**example, 'caption': self.prompt, 'loss_weight': np.float32(1.0)}
    k, is_class = divmod(index, 2)
    if is_class:
      example = self.classes.load(k % len(self.classes), flip, **kw)
      return {**example, 'caption': self.class_prompt, 'loss_weight': np.float32(2 * self.weight)}
    example = self.instance.load(k % len(self.instance), flip, **kw)
    return {**example, 'caption': self.prompt, 'loss_weight': np.float32(2.0)}


def dreambooth_source(config, make_folder_source):
  """The interleaved source of config.dreambooth (``make_folder_source(path)``: a folder source
  without annotations)."""
  db = config.dreambooth
  instance = make_folder_source(config.data.path)
  classes = None
  if db.num_class_images > 0:
    folder = db.class_dir  # WORKDIR/class_images unless set (train/dreambooth.py)
    if not folder or not os.path.isdir(folder):
      raise DataError(f'config.dreambooth: the class images folder {folder!r} does not exist')
    classes = make_folder_source(folder)
  return DreamBoothSource(instance, db.instance_prompt, classes, db.class_prompt,
                          db.prior_loss_weight)  # fmt: skip
