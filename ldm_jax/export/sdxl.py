"""SDXL's text encoders as diffusers holds them (``ldm_jax.export.diffusers``): ``text_encoder``
(CLIPTextModel, the base only) and ``text_encoder_2`` (CLIPTextModelWithProjection: every layer,
``text_projection.weight`` = our projection transposed; OpenCLIP's logit scale, which transformers
does not hold, is left out), their tokenizers, and the pipeline's flags
(``force_zeros_for_empty_prompt``, the refiner's ``requires_aesthetics_score``).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ldm_jax import storage


def pipeline_class(config) -> str:
  """StableDiffusionXLPipeline (base), StableDiffusionXLImg2ImgPipeline (the refiner)."""
  return 'StableDiffusionXLImg2ImgPipeline' if _refiner(config) else 'StableDiffusionXLPipeline'


def _refiner(config) -> bool:
  return 'aesthetic_score' in config.cond_stage.micro_conditioning


def _encoder_group(cs, first: bool):
  """The cond_stage fields of one encoder, as diffusers' exporters read them."""
  if not first:
    return cs
  f = cs.first_encoder
  return ml_collections.ConfigDict(
    dict(
      kind='clip',
      embed_dim=f.embed_dim,
      n_head=f.n_head,
      act=f.act,
      max_seq_len=cs.max_seq_len,
      vocab_size=f.vocab_size,
      projection_dim=f.embed_dim,
      pad_token_id=f.pad_token_id,
      tokenizer=f.tokenizer,
    )  # fmt: skip
  )


def write_text_encoders(out: str, config, params: dict, index: dict) -> None:
  from ldm_jax.export.text import clip_text_config, clip_text_tensors, write_model, write_tokenizer

  cs, cond = config.cond_stage, params['cond_stage']
  names = sorted(cond)
  first = bool(cs.first_encoder.embed_dim)
  for i, name in enumerate(names):
    is_first = first and i == 0
    group = _encoder_group(cs, is_first)
    layers = cs.first_encoder.n_layer if is_first else cs.n_layer
    text_cfg = clip_text_config(group, layers)
    tensors = clip_text_tensors(cond[name], layers)
    folder, tok = ('text_encoder', 'tokenizer') if is_first else ('text_encoder_2', 'tokenizer_2')
    cls = 'CLIPTextModel'
    if not is_first:
      cls = 'CLIPTextModelWithProjection'
      text_cfg.update(architectures=[cls], projection_dim=cs.projection_dim)
      proj = np.asarray(cond[name]['model']['text_projection'])
      tensors['text_projection.weight'] = np.ascontiguousarray(proj.T)
    write_model(storage.join(out, folder), text_cfg, tensors, 'model.safetensors')
    index[folder] = ['transformers', cls]
    index[tok] = ['transformers', write_tokenizer(storage.join(out, tok), group)]
  if not first:
    index.update(text_encoder=[None, None], tokenizer=[None, None])
  index.update(
    force_zeros_for_empty_prompt=bool(cs.zeros_for_empty_prompt),
    image_encoder=[None, None],
    feature_extractor=[None, None],
  )
  if _refiner(config):
    index['requires_aesthetics_score'] = True
