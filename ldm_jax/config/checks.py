"""Checks of a whole config: value types against base_config()'s, the choices table, and the
rules of each group that no single value shows (a VQ model needs a codebook, ...)."""

from __future__ import annotations

import ml_collections

from ldm_jax.config.choices import ConfigError, check_choices
from ldm_jax.config.defaults import base_config, downsampling_factor


def profile_steps(spec: str) -> tuple[int, int] | None:
  """config.training.profile_steps 'a,b' (or 'a') as (a, b); None when empty."""
  if not spec:
    return None
  try:
    parts = [int(p) for p in str(spec).split(',')]
  except ValueError:
    parts = []
  if len(parts) == 1:
    parts *= 2
  if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
    raise ConfigError(
      f'config.training.profile_steps={spec!r}: give the first and last step to trace, '
      "1-based, as 'a,b' with 1 <= a <= b (e.g. '10,12')"
    )
  return parts[0], parts[1]


def _number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_types(config, defaults=None, prefix: str = 'config') -> None:
  """A value whose kind differs from base_config()'s for the same key (a string where a tuple
  belongs: --config.unet.channel_mult=abc) is a ConfigError naming the key and an example."""
  defaults = base_config() if defaults is None else defaults
  for key, default in defaults.items():
    if key not in config:
      continue
    value, name = config[key], f'{prefix}.{key}'
    if isinstance(default, ml_collections.ConfigDict):
      if isinstance(value, ml_collections.ConfigDict):
        check_types(value, default, name)
    elif isinstance(default, (tuple, list)) and (
      not isinstance(value, (tuple, list))
      or (
        default
        and all(_number(d) for d in default)
        and not all(_number(v) or isinstance(v, (tuple, list)) for v in value)
      )
    ):
      example = tuple(default) or (1, 2)
      raise ConfigError(
        f'{name}={value!r}: expected a tuple of numbers, e.g. --{name}="{example}" (quoted for the shell)'
      )


def validate(config) -> None:
  """Raise ConfigError with the key and the fix for settings that cannot work. The task's own
  settings (conditioning widths, guidance, caching) are checked by ``tasks.get_task``."""
  check_types(config)
  check_choices(config)
  _check_data(config)
  _check_first_stage(config)
  _check_diffusion(config)
  _check_training(config)
  if config.get('lora') and config.lora.rank:
    _check_lora(config)
  if config.get('dreambooth') and config.dreambooth.instance_prompt:
    _check_dreambooth(config)


def _check_data(config) -> None:
  d = config.data
  if d.source in ('folder', 'jsonl', 'records', 'shards') and not d.path:
    what = {'folder': '/path/to/images', 'records': '/path/to/packed', 'shards': "'dir/{0..9}.tar'"}
    what['jsonl'] = '/path/to/captions.jsonl'
    raise ConfigError(f'config.data.source={d.source!r} needs config.data.path={what[d.source]}')
  if d.num_workers < 0:
    raise ConfigError('config.data.num_workers must be >= 0 (0: decode in threads)')
  if d.latent_cache and d.cache_latents:
    raise ConfigError(
      'config.data.latent_cache (on disk) and config.data.cache_latents (in memory) are '
      'exclusive: set one'
    )
  if d.source == 'tfds' and not d.name:
    raise ConfigError(
      "config.data.source='tfds' needs config.data.name, e.g. 'lsun/church_outdoor'"
    )
  if config.stage == 'ldm' and d.image_size % downsampling_factor(config):
    raise ConfigError(
      'config.data.image_size must be divisible by the first stage downsampling '
      'factor 2**(len(first_stage.ch_mult) - 1)'
    )
  if d.get('buckets'):
    _check_buckets(config)
  if d.get('text_cache') and d.source == 'shards':
    raise ConfigError(
      'config.data.text_cache is read by example index; tar shards are streams: pack them '
      "(python -m ldm_jax.data.pack) or set --config.data.text_cache=''"
    )
  if d.get('text_cache') and config.cond_stage.get('trainable', True):
    raise ConfigError(
      'config.data.text_cache holds the outputs of a frozen text encoder, but this run trains it '
      '(config.cond_stage.trainable=True): set --config.cond_stage.trainable=False, or '
      "--config.data.text_cache=''"
    )
  if d.get('text_cache') and config.cond_stage.get('mask_padding', False):
    raise ConfigError(
      'config.data.text_cache stores contexts without their padding masks; '
      'config.cond_stage.mask_padding=True needs them: train without the text cache'
    )


def _check_buckets(config) -> None:
  from ldm_jax.config.buckets import parse_buckets

  d = config.data
  if d.source not in ('folder', 'jsonl', 'records'):
    raise ConfigError(
      f'config.data.buckets needs a folder, jsonl or records source, not {d.source!r} (pack '
      "other data with `python -m ldm_jax.data.pack`), or set --config.data.buckets=''"
    )
  if d.latent_cache or d.cache_latents:
    raise ConfigError(
      'config.data.buckets and a latent cache (config.data.latent_cache / cache_latents) are '
      'exclusive: a cache holds latents of one shape; drop one of them'
    )
  factor = downsampling_factor(config) if config.stage == 'ldm' else 1
  factor *= 2 ** (len(config.unet.channel_mult) - 1) if config.stage == 'ldm' else 1
  shapes = parse_buckets(d.buckets)
  bad = [f'{h}x{w}' for h, w in shapes if h % factor or w % factor]
  if bad:
    raise ConfigError(
      f"config.data.buckets: {', '.join(bad)} not divisible by {factor} (the first stage's "
      "and the UNet's downsampling): use multiples of it"
    )


def _check_first_stage(config) -> None:
  if config.first_stage.kind == 'vq' and config.first_stage.n_embed <= 0:
    raise ConfigError(
      'config.first_stage.kind=vq needs config.first_stage.n_embed > 0 (codebook size)'
    )
  if config.first_stage_loss.perceptual_weight < 0:
    raise ConfigError('config.first_stage_loss.perceptual_weight must be >= 0 (0 = no LPIPS)')


def _check_diffusion(config) -> None:
  d = config.diffusion
  for key in ('snr_gamma', 'noise_offset', 'input_perturbation'):
    if d.get(key, 0.0) < 0:
      raise ConfigError(f'config.diffusion.{key} must be >= 0 (0 = off), got {d[key]}')
  if d.get('rescale_zero_terminal_snr') and d.parameterization != 'v':
    raise ConfigError(
      'config.diffusion.rescale_zero_terminal_snr=True makes the last step pure noise, where '
      f'{d.parameterization!r} prediction is trivial or undefined and teaches nothing (Lin et al. '
      '2024, section 3.2): set --config.diffusion.parameterization=v'
    )
  if not 0.0 <= config.sampling.get('guidance_rescale', 0.0) <= 1.0:
    raise ConfigError('config.sampling.guidance_rescale must be in [0, 1] (0 = off)')


def _check_training(config) -> None:
  t = config.training
  for key in ('batch_size', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints'):
    if t[key] <= 0:
      raise ConfigError(f'config.training.{key} must be > 0, got {t[key]}')
  profile_steps(t.profile_steps)
  if t.get('stall_timeout_s', 0) < 0:
    raise ConfigError(
      f'config.training.stall_timeout_s must be >= 0 (0 = never), got {t.stall_timeout_s}'
    )
  for key, off in (('compute_dtype', 'float32'), ('remat', '')):
    if t[key] != off and config.stage != 'ldm':
      raise ConfigError(
        f'config.training.{key}={t[key]!r} is for the ldm stage (the UNet); the '
        f'first stage trains in float32: set --config.training.{key}={off!r}'
      )
  if t.eval_every < 0 or (t.eval_every and config.stage != 'ldm'):
    raise ConfigError(
      'config.training.eval_every (sample FID) is for the ldm stage and >= 0; '
      'autoencoders: python -m ldm_jax.eval.reconstruction'
    )
  o = config.optimizer
  if o.get('schedule', 'constant') != 'constant' and t.num_steps <= o.warmup_steps:
    raise ConfigError(
      f'config.optimizer.schedule={o.schedule!r} decays after warmup_steps={o.warmup_steps}, '
      f'but config.training.num_steps={t.num_steps} ends before: raise num_steps'
    )
  if t.eval_every and t.eval_num_samples < 4:
    raise ConfigError(
      f'config.training.eval_num_samples={t.eval_num_samples}: FID needs at least '
      'a few samples (the paper uses 50000; 1000+ for a useful trend)'
    )
  _check_accumulation(config)


def _check_accumulation(config) -> None:
  t = config.training
  if t.grad_accum_steps <= 0:
    raise ConfigError(f'config.training.grad_accum_steps must be > 0, got {t.grad_accum_steps}')
  if t.grad_accum_steps > 1 and config.stage != 'ldm':
    raise ConfigError(
      "config.training.grad_accum_steps > 1 is for the ldm stage: the first stage's "
      'adaptive GAN weight and BatchNorm discriminator need the whole batch at once; '
      'use more devices or a smaller batch_size'
    )
  if t.batch_size % t.grad_accum_steps:
    raise ConfigError(
      f'config.training.batch_size={t.batch_size} must be divisible by '
      f'grad_accum_steps={t.grad_accum_steps}'
    )


def _check_lora(config) -> None:
  from ldm_jax.config.adapters import parse_targets

  lora = config.lora
  if config.stage != 'ldm':
    raise ConfigError('config.lora.rank > 0 trains adapters of an LDM: set config.stage=ldm')
  if lora.rank < 0 or lora.alpha < 0:
    raise ConfigError('config.lora.rank and config.lora.alpha must be >= 0')
  if not config.training.get('init_from'):
    raise ConfigError(
      'a LoRA run adapts a trained model: set --config.training.init_from=WORKDIR (e.g. a '
      'converted Stable Diffusion: python -m ldm_jax.convert ...)'
    )
  if lora.dropout:
    raise ConfigError(
      'config.lora.dropout must be 0: the adapters are merged into the weights for each step '
      "(one pass of the model), which leaves no separate adapter input to drop (PEFT's "
      'lora_dropout); diffusers trains its LoRA scripts without it by default'
    )
  if 'text' in parse_targets(lora.targets) and config.data.get('text_cache'):
    raise ConfigError(
      "config.lora.targets has 'text', but config.data.text_cache skips the text encoder: drop "
      'one (the cached contexts would not see the text adapters)'
    )
  if config.training.eval_every:
    raise ConfigError(
      'a LoRA run draws no FID during training: set --config.training.eval_every=0 and '
      'evaluate the run with python -m ldm_jax.eval --workdir=RUN'
    )


def _check_dreambooth(config) -> None:
  db, d = config.dreambooth, config.data
  if config.stage != 'ldm' or config.cond_stage.kind not in ('clip', 'openclip', 'sdxl', 'bert'):
    raise ConfigError(
      'config.dreambooth.instance_prompt: DreamBooth fine-tunes a text-to-image LDM (cond_stage '
      "kind 'clip', 'openclip', 'sdxl' or 'bert')"
    )
  if d.source != 'folder' or not d.path:
    raise ConfigError(
      'config.dreambooth: the instance images are a folder: set --config.data.source=folder '
      '--config.data.path=DIR (no captions needed: each gets the instance prompt)'
    )
  if d.cache_latents or d.get('latent_cache') or d.get('text_cache') or d.get('buckets'):
    raise ConfigError(
      'config.dreambooth reads its instance and class images as they are: set '
      "--config.data.cache_latents=False --config.data.latent_cache='' "
      "--config.data.text_cache='' --config.data.buckets=''"
    )
  if db.num_class_images < 0 or db.prior_loss_weight < 0:
    raise ConfigError('config.dreambooth.num_class_images and prior_loss_weight must be >= 0')
  if db.num_class_images and not (db.class_prompt and config.training.get('init_from')):
    raise ConfigError(
      'config.dreambooth.num_class_images > 0 (prior preservation) draws class images of '
      'class_prompt with the model of training.init_from: set --config.dreambooth.class_prompt='
      "'a photo of a dog' and --config.training.init_from=BASE"
    )
