"""Class-conditional generation (ImageNet cin256): the label -> one ClassEmbedder token for
cross-attention. Raw condition: int32 labels [B]. With classifier-free guidance the null class
(config.cond_stage.null_label, e.g. 1000 of cin256-v2's 1001) is the unconditional input."""

from __future__ import annotations

import numpy as np

from ldm_jax.nn.encoders import ClassEmbedder
from ldm_jax.tasks.base import Task, TaskInputError


class ClassConditional(Task):
  name = 'class'
  any_shape = True
  label_is_condition = True
  samples_from_examples = False
  encoder_kinds = ('class',)
  input_args = ('class_label',)
  input_help = {'class_label': "Class index, or 'all' to cycle through the classes."}
  optional_args = ('class_label',)  # default: cycle through the classes

  @property
  def num_classes(self) -> int:
    """The classes a user can ask for (without the null class)."""
    return self.cs.n_classes - (1 if self.cs.null_label >= 0 else 0)

  def validate(self):
    cs = self.cs
    if cs.n_classes <= 0:
      raise ValueError('config.cond_stage.kind=class needs config.cond_stage.n_classes > 0')
    if cs.p_uncond > 0 and not 0 <= cs.null_label < cs.n_classes:
      raise ValueError(
        f'config.cond_stage.p_uncond={cs.p_uncond} needs a null class: set '
        f'config.cond_stage.null_label to an index in [0, {cs.n_classes})'
      )

  def build_encoder(self):
    return ClassEmbedder(embed_dim=self.cs.embed_dim, n_classes=self.cs.n_classes)

  def encoder_input(self, batch=1):
    return np.zeros((batch,), np.int32)

  def user_condition(self, num, class_label=None):
    """'all' (or None) cycles the real classes; an integer repeats one class."""
    return self.labels(class_label, num), None, None

  def labels(self, class_label, num: int) -> np.ndarray:
    real = self.num_classes
    if class_label in (None, '', 'all'):
      return np.arange(num, dtype=np.int32) % real
    try:
      label = int(class_label)
    except (TypeError, ValueError):
      raise TaskInputError(
        f"a class label must be an integer or 'all', got {class_label!r}"
      ) from None
    if not 0 <= label < real:
      raise TaskInputError(f"class label {label} is outside this model's classes 0..{real - 1}")
    return np.full(num, label, np.int32)

  def training_condition(self, examples, positions):
    return np.array([e['label'] for e in examples], np.int32)

  def sample_condition(self, num, examples, first=0):
    return (first + np.arange(num, dtype=np.int32)) % self.num_classes

  def null_condition(self, cond):
    if self.cs.null_label < 0:
      raise TaskInputError(
        'classifier-free guidance needs a class-conditional model trained with '
        'a null class (config.cond_stage.null_label >= 0); use guidance_scale 1'
      )
    return np.full(len(cond), self.cs.null_label, np.int32)

  def tiles(self, cond, height, width):
    from ldm_jax.tasks.tiles import text_tiles

    return text_tiles([f'class {int(c)}' for c in np.asarray(cond)], height, width)
