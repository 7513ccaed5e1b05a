"""Convert diffusers-format LDMs (config.json + safetensors) into ldm_jax workdirs.

  python -m ldm_jax.convert diffusers --path DIR --out OUT

``DIR`` is a pipeline folder (``model_index.json``: LDMPipeline, LDMTextToImagePipeline,
LDMSuperResolutionPipeline, as the CompVis LDM repos on model hubs) or one model folder: VQModel or
AutoencoderKL (-> an autoencoder workdir), UNet2DModel / UNet2DConditionModel (with ``--first_stage``,
a folder of the first stage). The ldm_jax config is derived from the config.json files, the
diffusers parameter names are renamed to the CompVis ones, and the CompVis converter does the rest
(every key consumed, shapes checked). Neither ``.bin`` nor safetensors weights need torch.

Only what the CompVis architectures can express converts: a diffusers option without a CompVis
counterpart (another activation, norm, time embedding, block type) is an error naming it.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ldm_jax import storage
from ldm_jax.config import base_config, downsampling_factor
from ldm_jax.convert.clip_names import clip_fields, clip_text_to_compvis
from ldm_jax.convert.diffusers_names import (
  first_stage_to_compvis,
  ldmbert_to_compvis,
  unet_to_compvis_names,
)
from ldm_jax.convert.diffusers_unet import unet_fields
from ldm_jax.convert.sdxl import sdxl_condition
from ldm_jax.convert.torch_names import ConversionError

_WEIGHT_FILES = (
  'diffusion_pytorch_model.safetensors',
  'model.safetensors',
  'diffusion_pytorch_model.bin',
  'pytorch_model.bin',
)


# -- reading -------------------------------------------------------------------------------------
def read_model_folder(folder: str) -> tuple[dict, dict]:
  """(config.json, state dict of numpy arrays) of one diffusers/transformers model folder."""
  cfg_path = os.path.join(folder, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'{folder} has no config.json: not a diffusers model folder')
  with open(cfg_path) as f:
    cfg = json.load(f)
  for name in _WEIGHT_FILES:
    path = os.path.join(folder, name)
    if os.path.exists(path):
      from ldm_jax.convert.compvis import read_state_dict

      return cfg, read_state_dict(path)[0]
  raise FileNotFoundError(f'{folder} has none of {_WEIGHT_FILES}')


def _require(cfg: dict, key: str, allowed, what: str):
  value = cfg.get(key, allowed[0])
  if value not in allowed:
    raise ConversionError(
      f'{what}: {key}={value!r} has no CompVis counterpart (supported: {allowed})'
    )
  return value


# -- configs -------------------------------------------------------------------------------------
def first_stage_fields(cfg: dict) -> dict:
  """config.first_stage from a VQModel / AutoencoderKL config.json."""
  cls = cfg.get('_class_name')
  if cls not in ('VQModel', 'AutoencoderKL'):
    raise ConversionError(f'expected a VQModel or AutoencoderKL config, got {cls!r}')
  _require(cfg, 'act_fn', ['silu'], cls)
  _require(cfg, 'norm_num_groups', [32], cls)
  ch_list = list(cfg['block_out_channels'])
  ch = ch_list[0]
  if any(c % ch for c in ch_list):
    raise ConversionError(f'{cls}: block_out_channels {ch_list} are not multiples of the first')
  down = cfg.get('down_block_types') or ['DownEncoderBlock2D'] * len(ch_list)
  size = int(cfg.get('sample_size', 256))
  attn = tuple(size // 2**i for i, t in enumerate(down) if t.startswith('Attn'))
  latent = int(cfg['latent_channels'])
  fields = dict(
    ch=ch,
    ch_mult=tuple(c // ch for c in ch_list),
    num_res_blocks=int(cfg['layers_per_block']),
    attn_resolutions=attn,
    resolution=size,
    in_channels=int(cfg.get('in_channels', 3)),
    out_ch=int(cfg.get('out_channels', 3)),
    z_channels=latent,
    attn_type='vanilla' if cfg.get('mid_block_add_attention', True) else 'none',
  )
  if cls == 'VQModel':
    fields.update(
      kind='vq',
      embed_dim=int(cfg.get('vq_embed_dim') or latent),
      n_embed=int(cfg['num_vq_embeddings']),
    )
  else:
    fields.update(kind='kl', embed_dim=latent)
  return fields


def schedule_fields(cfg: dict) -> dict:
  """config.diffusion from a scheduler_config.json (DDIM/DDPM/PNDM/LMS: only the betas matter)."""
  kinds = {'scaled_linear': 'linear', 'linear': 'sqrt_linear'}  # diffusers -> reference names
  kind = cfg.get('beta_schedule', 'linear')
  if kind not in kinds:
    raise ConversionError(f'scheduler beta_schedule={kind!r} is not one of {sorted(kinds)}')
  pred = cfg.get('prediction_type', 'epsilon')
  preds = {'epsilon': 'eps', 'sample': 'x0', 'v_prediction': 'v'}
  if pred not in preds:
    raise ConversionError(f'prediction_type={pred!r}: ldm_jax has {sorted(preds)}')
  return dict(
    timesteps=int(cfg.get('num_train_timesteps', 1000)),
    beta_schedule=kinds[kind],
    linear_start=float(cfg['beta_start']),
    linear_end=float(cfg['beta_end']),
    parameterization=preds[pred],
  )


# -- parameter names (ldm_jax/convert/diffusers_names.py) -----------------------------------------
def unet_to_compvis(state_dict: dict, cfg: dict, prefix: str = 'model.diffusion_model.') -> dict:
  """diffusers UNet names (of a UNet2DModel / UNet2DConditionModel config.json) -> CompVis'."""
  return unet_to_compvis_names(state_dict, unet_fields(cfg), prefix)


# -- whole models --------------------------------------------------------------------------------
def _first_stage_config(fs_cfg: dict):
  c = base_config()
  c.stage = 'autoencoder'
  c.first_stage.update(first_stage_fields(fs_cfg))
  c.first_stage_loss.update(dict(use_discriminator=False))
  c.data.image_size = c.first_stage.resolution
  return c


def diffusers_config(path: str, first_stage: str | None = None):
  """(ldm_jax config, CompVis-named state dict) of a diffusers pipeline or model folder."""
  parts = _parts(path, first_stage)
  if parts is None:  # a first stage alone
    fs_cfg, fs_sd = read_model_folder(path)
    return _first_stage_config(fs_cfg), first_stage_to_compvis(fs_sd, fs_cfg, '')
  fs_cfg, fs_sd = read_model_folder(parts['first_stage'])
  unet_cfg, unet_sd = read_model_folder(parts['unet'])
  c = _first_stage_config(fs_cfg)
  c.stage = 'ldm'
  c.unet.update(unet_fields(unet_cfg))
  c.data.image_size = int(unet_cfg.get('sample_size', 64)) * downsampling_factor(c)
  sched_path = parts['scheduler']
  if sched_path and os.path.exists(sched_path):
    with open(sched_path) as fh:
      c.diffusion.update(schedule_fields(json.load(fh)))
  # diffusers' LDMPipeline and LDMSuperResolutionPipeline decode VQ latents unscaled (CompVis
  # scale_factor 1; VQModel's scaling_factor is a default nobody reads); KL latents are scaled.
  c.diffusion.scale_factor = (
    float(fs_cfg.get('scaling_factor', 1.0)) if c.first_stage.kind == 'kl' else 1.0
  )
  sd = {**unet_to_compvis(unet_sd, unet_cfg), **first_stage_to_compvis(fs_sd, fs_cfg)}
  _add_condition(c, sd, {**parts, 'unet_config': unet_cfg})
  return c, sd


def _parts(path: str, first_stage: str | None) -> dict | None:
  """The component folders of a pipeline folder (or of a UNet folder and ``first_stage``):
  unet, first_stage, bert, text, tokenizer, scheduler (None where absent); None for a folder
  holding a first stage alone."""
  index = os.path.join(path, 'model_index.json')
  if not os.path.exists(index):
    with open(os.path.join(path, 'config.json')) as f:
      cls = json.load(f).get('_class_name')
    if cls in ('VQModel', 'AutoencoderKL'):
      return None
    if not first_stage:
      raise ConversionError(
        f'{path} holds a {cls}: an LDM also needs its first stage, pass '
        '--first_stage=<VQModel/AutoencoderKL folder>'
      )
    return dict(unet=path, first_stage=first_stage, bert=None, text=None, tokenizer=None,
                text_2=None, tokenizer_2=None, scheduler=None)  # fmt: skip
  with open(index) as f:
    components = json.load(f)
  pipeline = components.get('_class_name', '')
  vae = next((n for n in ('vqvae', 'vae') if n in components), None)
  if 'unet' not in components or vae is None:
    raise ConversionError(f'{path}: a {pipeline or "pipeline"} without a unet and a vqvae/vae')
  # a component is [library, class]; SDXL's refiner lists text_encoder as [null, null]
  held = lambda name: bool(components.get(name)) and components[name][0] is not None
  part = lambda name: os.path.join(path, name) if held(name) else None
  return dict(
    unet=os.path.join(path, 'unet'),
    first_stage=os.path.join(path, vae),
    bert=part('bert'),
    text=part('text_encoder'),
    tokenizer=part('tokenizer'),
    text_2=part('text_encoder_2'),
    tokenizer_2=part('tokenizer_2'),
    index=components,
    scheduler=os.path.join(path, 'scheduler', 'scheduler_config.json'),
  )


def _add_condition(c, sd: dict, parts: dict) -> None:
  """The pipeline's conditioning into config ``c`` and state dict ``sd``: LDMBert (LDM text),
  CLIP (Stable Diffusion, inpainting), or the concatenated low-resolution image (super-res)."""
  latent = c.first_stage.embed_dim
  tokenizer_dir = parts['tokenizer']
  if parts.get('text_2'):  # SDXL (base and refiner)
    sdxl_condition(c, sd, parts, read_model_folder)
  elif parts['bert']:
    bert_cfg, bert_sd = read_model_folder(parts['bert'])
    c.cond_stage.update(
      dict(
        kind='bert',
        embed_dim=int(bert_cfg['d_model']),
        n_layer=int(bert_cfg['encoder_layers']),
        vocab_size=int(bert_cfg['vocab_size']),
        max_seq_len=int(bert_cfg['max_position_embeddings']),
      )
    )
    sd.update(ldmbert_to_compvis(bert_sd))
    if tokenizer_dir and os.path.isdir(tokenizer_dir):
      c.cond_stage.tokenizer = tokenizer_dir  # copied next to the checkpoint by convert_diffusers
  elif parts['text']:  # Stable Diffusion: transformers' CLIPTextModel
    text_cfg, text_sd = read_model_folder(parts['text'])
    c.cond_stage.update(clip_fields(text_cfg, tokenizer_dir))
    c.cond_stage.p_uncond = 0.1  # empty prompts when fine-tuning (SD's own training)
    c.cond_stage.trainable = False
    sd.update(clip_text_to_compvis(text_sd))
    c.training.use_ema = False
    c.task = 'text'
    if c.unet.in_channels == 2 * latent + 1:  # StableDiffusionInpaintPipeline: [x, mask, z_masked]
      c.task, c.cond_stage.conditioning_key = 'text_inpainting', 'hybrid'
  elif c.unet.in_channels > latent:  # LDMSuperResolutionPipeline: the LR image is concatenated
    c.cond_stage.update(
      dict(kind='identity', conditioning_key='concat', channels=c.unet.in_channels - latent)
    )


def convert_diffusers(path: str, out: str, first_stage: str | None = None) -> dict:
  """Convert a diffusers folder into a workdir; returns a report (JSON-able)."""
  from ldm_jax.convert import compvis as convert
  from ldm_jax.convert import hub

  if hub.is_hub_id(path):
    path = hub.snapshot(path)
  if first_stage and hub.is_hub_id(first_stage):
    first_stage = hub.snapshot(first_stage)
  config, sd = diffusers_config(path, first_stage)
  convert.validate_for_conversion(config)
  # The pipeline's own tokenizer files travel with the workdir (no hub access needed later).
  cs = config.cond_stage
  groups = [(cs, 'tokenizer')] if cs.kind in ('bert', 'clip') else []
  if cs.kind == 'sdxl':
    groups = [(cs.first_encoder, 'tokenizer'), (cs, 'tokenizer_2')]
  for group, name in groups:
    if os.path.isdir(group.tokenizer):
      convert.check_new_workdir(out)
      target = storage.join(storage.resolve(out), name)
      storage.copytree(group.tokenizer, target)
      group.tokenizer = target
  if config.stage == 'ldm':
    from ldm_jax.latent_diffusion import build_schedule

    sched = build_schedule(config)
    sd.update({k: np.asarray(getattr(sched, k), np.float32) for k in convert.SCHEDULE_BUFFERS})
    converted = convert.convert_ldm(sd, config)
  else:
    converted = convert.convert_first_stage(sd, config)
  workdir = convert.write_workdir(out, config, converted)
  return {
    'path': path,
    'out': workdir,
    'stage': config.stage,
    'keys': len(sd),
    'cond_stage': config.cond_stage.kind,
    'scale_factor': converted.get('scale_factor'),
  }
