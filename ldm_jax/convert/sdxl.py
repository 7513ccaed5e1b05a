"""SDXL's conditioner in checkpoints: diffusers' ``text_encoder`` (CLIPTextModel, the base only)
and ``text_encoder_2`` (CLIPTextModelWithProjection) folders, and generative-models'
``conditioner.embedders.<i>.*`` names, onto the CompVis-style names the converter reads
(``cond_stage_model.embedders.<i>.transformer.text_model.*`` for CLIP,
``cond_stage_model.embedders.<i>.model.*`` for OpenCLIP, in transformers' names;
``ldm_jax.nn.sdxl``).

transformers' CLIPTextModelWithProjection holds no ``logit_scale`` (OpenCLIP's temperature, which
no SDXL computation reads); a diffusers folder converts with OpenCLIP's trained value, ln(100).
"""

from __future__ import annotations

import math

import numpy as np

from ldm_jax.convert.clip_names import clip_fields, clip_text_to_compvis, openclip_text_to_hf
from ldm_jax.convert.torch_names import ConversionError
from ldm_jax.tensor_files import stored_precision

PREFIX = 'cond_stage_model.embedders.'
_MICRO = {
  False: 'original_size,crop_top_left,target_size',
  True: 'original_size,crop_top_left,aesthetic_score',
}


def _text_keys(sd: dict, prefix: str) -> dict:
  """transformers' names (with or without ``text_model.``) under ``prefix``; the projection
  (CLIPTextModelWithProjection's Linear) as OpenCLIP's [width, projection_dim] parameter."""
  rest = {k: v for k, v in sd.items() if not k.endswith('position_ids')}
  proj = rest.pop('text_projection.weight', None)
  out = clip_text_to_compvis(rest, prefix)
  if proj is not None:
    out[prefix + 'text_projection'] = np.ascontiguousarray(np.asarray(proj).T)
  return out


def sdxl_condition(c, sd: dict, parts: dict, read_model_folder) -> None:
  """config.cond_stage (kind 'sdxl') and the conditioner's tensors of a diffusers SDXL folder."""
  main_cfg, main_sd = read_model_folder(parts['text_2'])
  main = clip_fields(main_cfg, parts['tokenizer_2'])
  proj = int(main_cfg.get('text_config', main_cfg).get('projection_dim') or 0)
  if 'text_projection.weight' not in main_sd or not proj:
    raise ConversionError('text_encoder_2: expected a CLIPTextModelWithProjection (SDXL)')
  index = parts.get('index') or {}
  refiner = bool(index.get('requires_aesthetics_score', False))
  micro_dim = int(parts.get('unet_config', {}).get('addition_time_embed_dim') or 256)
  numbers = (c.unet.adm_in_channels - proj) / micro_dim
  if numbers != (5 if refiner else 6):
    raise ConversionError(
      f'unet: projection_class_embeddings_input_dim={c.unet.adm_in_channels} is not the pooled '
      f'text ({proj}) + {5 if refiner else 6} x {micro_dim} of an SDXL '
      f'{"refiner" if refiner else "base"} (model_index.json requires_aesthetics_score)'
    )
  main.update(kind='sdxl', layer='penultimate_hidden', projection_dim=proj, micro_dim=micro_dim,
              micro_conditioning=_MICRO[refiner],
              zeros_for_empty_prompt=bool(index.get('force_zeros_for_empty_prompt', True)))  # fmt: skip
  first = 0
  if parts.get('text'):
    first_cfg, first_sd = read_model_folder(parts['text'])
    f = clip_fields(first_cfg, parts['tokenizer'])
    c.cond_stage.first_encoder.update(
      {k: f[k] for k in ('embed_dim', 'n_layer', 'n_head', 'act', 'vocab_size')}
    )
    for k in ('pad_token_id', 'tokenizer'):
      if k in f:
        c.cond_stage.first_encoder[k] = f[k]
    sd.update(_text_keys(first_sd, PREFIX + '0.transformer.'))
    first = 1
  c.cond_stage.update(main)
  sd.update(_text_keys(main_sd, f'{PREFIX}{first}.model.'))
  sd[f'{PREFIX}{first}.model.logit_scale'] = np.float32(math.log(100.0))
  c.cond_stage.update(dict(p_uncond=0.0, trainable=False))
  c.training.use_ema = False
  c.task = 'sdxl'


def sigmas(config) -> np.ndarray:
  """generative-models' ``denoiser.sigmas``: sqrt((1 - abar) / abar) per training timestep."""
  from ldm_jax.latent_diffusion import build_schedule

  abar = np.asarray(build_schedule(config).alphas_cumprod, np.float64)
  return np.sqrt((1 - abar) / abar)


def check_sigmas(sd: dict, config, rtol: float = 1e-4) -> list[str]:
  """generative-models' ``denoiser.sigmas`` buffer (sqrt((1 - abar) / abar)) against the config's
  schedule; the key when it is present and agrees."""
  if 'denoiser.sigmas' not in sd:
    return []
  theirs, ours = np.asarray(sd['denoiser.sigmas'], np.float64), sigmas(config)
  rtol = max(rtol, 2 * stored_precision(sd['denoiser.sigmas']))  # a float16 file's rounding
  same = lambda a: a.shape == ours.shape and np.allclose(a, ours, rtol=rtol)
  if not (same(theirs) or same(theirs[::-1])):  # either order means the same schedule
    raise ConversionError(
      "the checkpoint's denoiser.sigmas differ from the config's schedule: use the config of "
      'this checkpoint (configs/released/sdxl_base.py or sdxl_refiner.py)'
    )
  return ['denoiser.sigmas']


def generative_models_to_compvis(sd: dict) -> dict:
  """A generative-models SDXL state dict: ``conditioner.embedders.<i>.`` -> the conditioner's
  CompVis-style prefix, OpenCLIP's names (``model.transformer.resblocks...``) -> transformers'."""
  out = {}
  for k, v in sd.items():
    out[
      PREFIX + k[len('conditioner.embedders.') :] if k.startswith('conditioner.embedders.') else k
    ] = v
  for i in sorted({k.split('.')[2] for k in out if k.startswith(PREFIX)}):
    out = openclip_text_to_hf(out, f'{PREFIX}{i}.model.')
  return out
