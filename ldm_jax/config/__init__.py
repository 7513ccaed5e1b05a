"""Configs: the defaults every config file starts from, the choices of its enumerated keys, its
checks, typed model configs, and config files.

  defaults.py  base_config(), one builder per group
  choices.py   CHOICES: every enumerated key's values (validate and the flags read it)
  checks.py    validate(), split by group; check_types
  models.py    UNetConfig, TextEncoderConfig: the typed, frozen model options
  files.py     find and load config files; the JSON form in checkpoints; state-defining keys
"""

from ldm_jax.config.checks import check_types, profile_steps, validate
from ldm_jax.config.choices import CHOICES, COND_KINDS, STAGES, ConfigError
from ldm_jax.config.defaults import base_config, downsampling_factor, learning_rate
from ldm_jax.config.files import (
  PACKAGED_CONFIGS,
  find_config,
  load_config_file,
  state_defining_differences,
  to_json_dict,
)
from ldm_jax.config.models import TextEncoderConfig, UNetConfig

__all__ = [
  'CHOICES',
  'COND_KINDS',
  'PACKAGED_CONFIGS',
  'STAGES',
  'ConfigError',
  'TextEncoderConfig',
  'UNetConfig',
  'base_config',
  'check_types',
  'downsampling_factor',
  'find_config',
  'learning_rate',
  'load_config_file',
  'profile_steps',
  'state_defining_differences',
  'to_json_dict',
  'validate',
]
