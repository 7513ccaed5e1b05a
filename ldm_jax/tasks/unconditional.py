"""Unconditional generation (LSUN, CelebA-HQ, FFHQ): no condition, no encoder."""

from __future__ import annotations

from ldm_jax.tasks.base import Task


class Unconditional(Task):
  name = 'unconditional'
  any_shape = True
  has_condition = False
  samples_from_examples = False
  encoder_kinds = ('none',)
  conditioning_key = ''

  def user_condition(self, num, **inputs):
    return None, None, None

  def training_condition(self, examples, positions):
    return None

  def sample_condition(self, num, examples, first=0):
    return None

  def encode(self, ldm, params, first_stage_params, cond):
    return None
