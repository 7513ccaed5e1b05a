"""Config files and saved configs: finding and loading a config file, the JSON form stored in
checkpoints, and the settings that make a checkpoint unusable when they change."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os

import ml_collections

from ldm_jax.config.choices import ConfigError


def to_json_dict(config) -> dict:
  """Plain JSON-compatible dict (tuples become lists), as stored in checkpoints."""
  return json.loads(config.to_json())


# Settings that determine the shape or meaning of what a checkpoint holds. A run may change anything
# else (steps, batch size, learning rate, logging, data) and still resume.
_STATE_DEFINING = (
  'stage',
  'first_stage',
  'unet',
  'cond_stage.kind',
  'cond_stage.n_classes',
  'cond_stage.embed_dim',
  'cond_stage.conditioning_key',
  'cond_stage.n_layer',
  'cond_stage.n_head',
  'cond_stage.projection_dim',
  'cond_stage.trainable',  # the optimizer state's structure
  'cond_stage.vocab_size',
  'cond_stage.max_seq_len',
  'cond_stage.n_stages',
  'cond_stage.multiplier',
  'cond_stage.in_channels',
  'cond_stage.out_channels',
  'cond_stage.bias',
  'cond_stage.channels',
  'cond_stage.first_encoder.embed_dim',
  'cond_stage.first_encoder.n_layer',
  'cond_stage.first_encoder.n_head',
  'cond_stage.first_encoder.vocab_size',
  'cond_stage.micro_conditioning',
  'cond_stage.micro_dim',
  'diffusion',
  'training.use_ema',
  'optimizer.name',
  'first_stage_loss.use_discriminator',
  'first_stage_loss.disc_num_layers',
  'first_stage_loss.disc_ndf',
  'first_stage_loss.disc_in_channels',
  'first_stage_loss.use_actnorm',
  'first_stage_loss.train_logvar',
)
# Training choices inside state-defining groups: a run may change them and resume.
_IGNORED = (
  'first_stage.checkpoint',
  'diffusion.snr_gamma',
  'diffusion.noise_offset',
  'diffusion.input_perturbation',
)


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def state_defining_differences(saved: dict, current: dict) -> list[str]:
  """Keys whose values differ between two JSON config dicts and would make a checkpoint unusable."""
  a, b = _flatten(saved), _flatten(current)
  keep = lambda k: (
    any(k == p or k.startswith(p + '.') for p in _STATE_DEFINING) and k not in _IGNORED
  )
  # A key the saved config lacks was added to ldm_jax after the run started: its default applies.
  keys = sorted(k for k in set(a) | set(b) if keep(k) and k in a)
  return [
    f'{k}: checkpoint has {a.get(k, "<missing>")!r}, config has {b.get(k, "<missing>")!r}'
    for k in keys
    if a.get(k) != b.get(k)
  ]


PACKAGED_CONFIGS = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs'
)


def find_config(path: str) -> str:
  """A config file path (optionally ``path:arg``) as given if it exists, else the same file among
  the configs installed with the package (``configs/lsun_churches.py`` works after
  ``pip install git+...``, from any folder). ConfigError when it is neither."""
  file, sep, arg = path.partition(':')
  if os.path.exists(file):
    return path
  rel = file.split('configs' + os.sep, 1)[1] if file.startswith('configs' + os.sep) else file
  packaged = os.path.join(PACKAGED_CONFIGS, rel)
  if file.endswith('.py') and os.path.exists(packaged):
    return packaged + sep + arg
  raise ConfigError(
    f'config file {file!r} not found (here or among the installed configs in '
    f'{PACKAGED_CONFIGS}); give a file under configs/, e.g. --config=configs/digits_ldm.py'
  )


def _module_name(path: str) -> str | None:
  """``ldm_jax.configs.<...>`` for a file among the package's configs (through the configs/ link
  too), else None."""
  real, root = os.path.realpath(path), os.path.realpath(PACKAGED_CONFIGS)
  if os.path.commonpath([real, root]) != root:
    return None
  rel = os.path.splitext(os.path.relpath(real, root))[0]
  return 'ldm_jax.configs.' + rel.replace(os.sep, '.')


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """configs/<...>.py (optionally ``path:arg``; see find_config) -> its get_config(). The
  package's configs are imported as ``ldm_jax.configs.<...>``; a file elsewhere is run as it is
  (configs import each other absolutely: ``from ldm_jax.configs.released import ldm``)."""
  path, _, arg = find_config(path).partition(':')
  name = _module_name(path)
  if name is not None:
    module = importlib.import_module(name)
  else:
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
