"""The PyTorch side of ``python -m ldm_jax.verify``: the source a workdir was converted from, loaded
with diffusers (and transformers), never with ldm_jax's own converters, so that a mapping mistake
on our side cannot hide itself.

- A diffusers folder or hub id: ``DiffusionPipeline.from_pretrained``.
- A CompVis / Stability single file (.ckpt/.safetensors): the torch modules are built from the
  workdir's architecture (the configs ``ldm_jax.export.diffusers`` writes, which name no weight),
  and filled by diffusers' own single-file key converters (``diffusers.loaders.single_file_utils``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError


@dataclasses.dataclass
class Reference:
  """The torch modules of a source: ``unet``, ``vae`` (AutoencoderKL or VQModel), ``text`` (a
  CLIPTextModel or LDMBert, None for models without text), ``tokenizer`` (None for single
  files: ours is compared through the token ids), ``latent_scale`` (what diffusers' pipeline
  divides latents by before decoding) and ``kind`` ('diffusers' or 'single_file')."""

  unet: Any
  vae: Any
  text: Any
  tokenizer: Any
  latent_scale: float
  kind: str
  state_dict: dict | None = None  # single files: the source's tensors (numpy)
  folder: str | None = None  # diffusers: the local folder (hub ids: the download cache)


def load_reference(source: str, config, use_ema: bool = True) -> Reference:
  """The source as torch modules (eval mode, float32, CPU)."""
  if source.endswith(('.ckpt', '.safetensors', '.pt', '.pth', '.bin')):
    ref = _single_file(source, config, use_ema)
  else:
    ref = _diffusers(source)
  for m in (ref.unet, ref.vae, ref.text):
    if m is not None:
      m.float().eval()
  return ref


def _diffusers(source: str) -> Reference:
  import diffusers

  folder = source
  if not storage.isdir(source):
    if source.count('/') != 1 or os.path.exists(source):
      raise UserError(
        f'--source={source!r} is neither a diffusers folder, a hub id (org/name) nor a '
        '.ckpt/.safetensors file'
      )
    from huggingface_hub import snapshot_download

    folder = snapshot_download(source)
  if not os.path.exists(os.path.join(folder, 'model_index.json')):
    raise UserError(
      f'{source}: no model_index.json; give the pipeline folder the workdir came from'
    )
  pipe = diffusers.DiffusionPipeline.from_pretrained(folder)
  vae = getattr(pipe, 'vae', None) or getattr(pipe, 'vqvae', None)
  text = getattr(pipe, 'text_encoder', None) or getattr(pipe, 'bert', None)
  kl = isinstance(vae, diffusers.AutoencoderKL)
  scale = float(vae.config.scaling_factor) if kl else 1.0  # diffusers' LDM pipelines: VQ unscaled
  tokenizer = getattr(pipe, 'tokenizer', None)
  return Reference(pipe.unet, vae, text, tokenizer, scale, 'diffusers', folder=folder)


def _single_file(path: str, config, use_ema: bool) -> Reference:
  import diffusers
  import torch
  from diffusers.loaders import single_file_utils as sfu

  from ldm_jax.convert.compvis import read_state_dict
  from ldm_jax.export.diffusers import unet_config, vae_config

  sd, _ = read_state_dict(path)
  checkpoint = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
  if config.first_stage.kind != 'kl' or config.unet.num_classes:
    raise UserError(
      'verify reads single files of KL latent models with diffusers (Stable Diffusion and its '
      'kin); for this model give the diffusers folder it came from'
    )
  unet_cfg = unet_config(config)
  cls = getattr(diffusers, unet_cfg['_class_name'])
  unet = cls(**{k: v for k, v in unet_cfg.items() if not k.startswith('_')})
  _load(unet, sfu.convert_ldm_unet_checkpoint(checkpoint, unet.config, extract_ema=use_ema), 'unet')
  vae_cfg = vae_config(config, float(config.diffusion.scale_factor))
  vae = diffusers.AutoencoderKL(**{k: v for k, v in vae_cfg.items() if not k.startswith('_')})
  _load(vae, sfu.convert_ldm_vae_checkpoint(checkpoint, vae.config), 'vae')
  text = _single_file_text(checkpoint, config, sfu)
  scale = float(config.diffusion.scale_factor)
  if 'scale_factor' in sd:
    scale = float(np.asarray(sd['scale_factor']).reshape(-1)[0])
  return Reference(unet, vae, text, None, scale, 'single_file', state_dict=sd)


def _single_file_text(checkpoint: dict, config, sfu):
  """SD 1.x's CLIPTextModel or SD 2.x's OpenCLIP text tower (23 layers: the penultimate output),
  from diffusers' converters; None for models without a text encoder."""
  import transformers

  from ldm_jax.export.text import clip_text_config

  cs = config.cond_stage
  if cs.kind not in ('clip', 'openclip'):
    return None
  layers = cs.n_layer - (1 if cs.layer == 'penultimate' else 0)
  cfg = {k: v for k, v in clip_text_config(cs, layers).items() if not k.startswith('_')}
  cfg.pop('architectures', None)
  model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**cfg))
  if cs.kind == 'clip':
    tensors = sfu.convert_ldm_clip_checkpoint(checkpoint)
  else:
    tensors = sfu.convert_open_clip_checkpoint(model, checkpoint)
  if not any(k.startswith('text_model.') for k in model.state_dict()):  # transformers >= 5
    tensors = {k.removeprefix('text_model.'): v for k, v in tensors.items()}
  _load(model, tensors, 'text encoder')
  return model


def _load(module, tensors: dict, what: str) -> None:
  """Load ``tensors`` into ``module``; every parameter must be there (tensors the module has no
  place for, such as the OpenCLIP layer a penultimate-layer model leaves out, are skipped)."""
  own = module.state_dict()
  missing = sorted(k for k in own if k not in tensors and not k.endswith('position_ids'))
  shapes = [
    f'{k}: {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}'
    for k in own
    if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)
  ]
  if missing or shapes:
    raise UserError(
      f'the source does not fit this workdir ({what}): '
      + (f'{len(missing)} tensors missing, e.g. {missing[:3]}' if missing else '')
      + (f'shapes differ: {shapes[:3]}' if shapes else '')
      + '; was the workdir converted from another model?'
    )
  module.load_state_dict({k: tensors[k] for k in own if k in tensors}, strict=False)
