"""The choices of every enumerated config key, in one table: ``validate`` checks them and the
command-line flags that mirror a key take their choices from here."""

from __future__ import annotations

from ldm_jax.errors import UserError


class ConfigError(UserError):
  """A config file or value that cannot be used; the message names the key and the fix."""


STAGES = ('autoencoder', 'ldm')
COND_KINDS = (
  'none', 'class', 'bert', 'clip', 'openclip', 'sdxl', 'rescaler', 'first_stage', 'identity'
)  # fmt: skip
MICRO_CONDITIONS = ('original_size', 'crop_top_left', 'target_size', 'aesthetic_score')
DATA_SOURCES = ('digits', 'folder', 'jsonl', 'records', 'tfds', 'shards')

CHOICES = {
  'stage': STAGES,
  'data.source': DATA_SOURCES,
  'data.degradation': ('bicubic', 'bsr_light'),
  'data.mask': ('strokes', 'boxes', 'mixed'),
  'first_stage.kind': ('kl', 'vq'),
  'first_stage.attn_type': ('vanilla', 'none'),
  'first_stage_loss.disc_loss': ('hinge', 'vanilla'),
  'cond_stage.kind': COND_KINDS,
  'cond_stage.conditioning_key': ('', 'crossattn', 'concat', 'hybrid'),
  'diffusion.beta_schedule': ('linear', 'cosine', 'sqrt_linear', 'sqrt'),
  'diffusion.parameterization': ('eps', 'x0', 'v'),
  'diffusion.loss_type': ('l1', 'l2'),
  'optimizer.name': ('adamw', 'adam'),
  'optimizer.schedule': ('constant', 'cosine', 'linear'),
  'training.compute_dtype': ('float32', 'bfloat16'),
  'training.remat': ('', 'full', 'dots'),
  'sampling.spacing': ('', 'linspace', 'leading', 'trailing'),  # '' = 'linspace'
}


def check_choices(config) -> None:
  """Every key of CHOICES that the config has holds one of its choices."""
  for key, options in CHOICES.items():
    group, _, name = key.rpartition('.')
    node = config[group] if group else config
    if name in node and node[name] not in options:
      raise ConfigError(f'config.{key} = {node[name]!r}; expected one of {list(options)}')
