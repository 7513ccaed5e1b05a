"""CLIP text encoders in checkpoints: OpenCLIP's text-tower names -> transformers' CLIPTextModel
names (``ldm_jax.nn.clip``), transformers' names -> SD 1.x's, and config.cond_stage from a
CLIPTextModel config.json.

SD 2.x checkpoints hold the OpenCLIP ViT-H/14 text tower as ``cond_stage_model.model.*`` in
OpenCLIP's layout (``transformer.resblocks.i.attn.in_proj_weight``: q, k and v stacked); diffusers
folders and SD 1.x checkpoints hold ``text_model.*``. The renaming below is the whole difference.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np

from ldm_jax.convert.torch_names import ConversionError
from ldm_jax.tensor_files import split3

# OpenCLIP name, transformers name ({i}: the layer; a trailing '.' renames every key under it)
_NAMES = (
  ('token_embedding.weight', 'text_model.embeddings.token_embedding.weight'),
  ('positional_embedding', 'text_model.embeddings.position_embedding.weight'),
  ('ln_final.', 'text_model.final_layer_norm.'),
  ('transformer.resblocks.{i}.ln_1.', 'text_model.encoder.layers.{i}.layer_norm1.'),
  ('transformer.resblocks.{i}.ln_2.', 'text_model.encoder.layers.{i}.layer_norm2.'),
  ('transformer.resblocks.{i}.mlp.c_fc.', 'text_model.encoder.layers.{i}.mlp.fc1.'),
  ('transformer.resblocks.{i}.mlp.c_proj.', 'text_model.encoder.layers.{i}.mlp.fc2.'),
  ('transformer.resblocks.{i}.attn.out_proj.', 'text_model.encoder.layers.{i}.self_attn.out_proj.'),
)


def _rule(src: str, dst: str) -> tuple[str, str]:
  pattern = r'(\d+)'.join(re.escape(part) for part in src.split('{i}'))
  return '^' + pattern + ('' if src.endswith('.') else '$'), dst.replace('{i}', r'\1')


_RENAMES = tuple(_rule(o, h) for o, h in _NAMES)  # OpenCLIP -> transformers
_INVERSE = tuple(_rule(h, o) for o, h in _NAMES)  # transformers -> OpenCLIP


def _rename(name: str, rules) -> str:
  """``name`` through the first rule whose pattern matches it (unchanged when none does)."""
  for pattern, repl in rules:
    if re.match(pattern, name):
      return re.sub(pattern, repl, name)
  return name


_IN_PROJ = re.compile(r'^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$')


def openclip_text_to_hf(state_dict: Mapping[str, np.ndarray], prefix: str = '') -> dict:
  """The keys under ``prefix`` renamed (q/k/v split out of ``in_proj``); other keys unchanged.
  ``text_projection`` and ``logit_scale`` keep their names; the visual tower, if present, is left
  as it is (and then reported as unused by the loader)."""
  out = {}
  for key, value in state_dict.items():
    if not key.startswith(prefix):
      out[key] = value
      continue
    name = key[len(prefix) :]
    m = _IN_PROJ.match(name)
    if m:
      q, k, v = split3(value)  # (lazily for a LazyTensor: each part reads it)
      for part, a in zip('qkv', (q, k, v)):
        out[f'{prefix}text_model.encoder.layers.{m[1]}.self_attn.{part}_proj.{m[2]}'] = a
      continue
    out[prefix + _rename(name, _RENAMES)] = value
  return out


_HF_LAYER = re.compile(
  r'^text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$'
)


def hf_text_to_openclip(state_dict: Mapping[str, np.ndarray], prefix: str = '') -> dict:
  """``openclip_text_to_hf`` inverted: transformers names under ``prefix`` back to OpenCLIP's,
  q, k and v stacked into ``in_proj`` (exactly: the split was a slicing); other keys unchanged."""
  out, qkv = {}, {}
  for key, value in state_dict.items():
    if not key.startswith(prefix):
      out[key] = value
      continue
    name = key[len(prefix) :]
    m = _HF_LAYER.match(name)
    if m:
      qkv.setdefault((m[1], m[3]), {})[m[2]] = value
      continue
    out[prefix + _rename(name, _INVERSE)] = value
  for (layer, kind), parts in sorted(qkv.items()):
    if set(parts) != set('qkv'):
      raise ConversionError(f'layer {layer}: {kind} of {sorted(parts)} only; q, k and v are needed')
    stacked = [parts[p] for p in 'qkv']
    if all(isinstance(a, np.ndarray) for a in stacked):
      merged = np.concatenate(stacked, axis=0)
    else:  # abstract leaves (names and shapes only)
      merged = type(stacked[0])((3 * stacked[0].shape[0], *stacked[0].shape[1:]), stacked[0].dtype)
    out[f'{prefix}transformer.resblocks.{layer}.attn.in_proj_{kind}'] = merged
  return out


def clip_fields(cfg: dict, tokenizer_dir: str | None) -> dict:
  """config.cond_stage from a CLIPTextModel config.json (and the pipeline's tokenizer folder, which
  says the padding token: <|endoftext|> for SD 1.x, '!' = 0 for SD 2.x)."""
  if cfg.get('model_type', 'clip_text_model') != 'clip_text_model' and 'text_config' not in cfg:
    raise ConversionError(
      f'text_encoder: expected a CLIPTextModel config, got {cfg.get("model_type")!r}'
    )
  cfg = cfg.get('text_config', cfg)
  act = cfg.get('hidden_act', 'quick_gelu')
  if act not in ('quick_gelu', 'gelu'):
    raise ConversionError(f"CLIPTextModel: hidden_act={act!r} (supported: 'quick_gelu', 'gelu')")
  fields = dict(
    kind='clip',
    embed_dim=int(cfg['hidden_size']),
    n_layer=int(cfg['num_hidden_layers']),
    n_head=int(cfg['num_attention_heads']),
    act=act,
    layer='last',
    projection_dim=0,
    vocab_size=int(cfg.get('vocab_size', 49408)),
    max_seq_len=int(cfg.get('max_position_embeddings', 77)),
  )
  if int(cfg.get('intermediate_size', 4 * fields['embed_dim'])) != 4 * fields['embed_dim']:
    raise ConversionError('CLIPTextModel: intermediate_size != 4 x hidden_size has no counterpart')
  if tokenizer_dir and os.path.isdir(tokenizer_dir):
    fields['tokenizer'] = tokenizer_dir  # copied next to the checkpoint by convert_diffusers
    fields['pad_token_id'] = _pad_token_id(tokenizer_dir)
  return fields


def _pad_token_id(tokenizer_dir: str) -> int:
  """The padding token id of a CLIP tokenizer folder (either file layout transformers writes)."""
  from transformers import CLIPTokenizer  # transformers is used for tokenizers only

  try:
    tok = CLIPTokenizer.from_pretrained(tokenizer_dir)
  except (OSError, ValueError) as e:
    raise ConversionError(f'{tokenizer_dir}: not a readable CLIP tokenizer folder ({e})') from e
  return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def clip_text_to_compvis(state_dict: dict, prefix: str = 'cond_stage_model.transformer.') -> dict:
  """transformers' CLIPTextModel names (with or without the ``text_model.`` that transformers 4
  wrote) -> SD 1.x's ``cond_stage_model.transformer.text_model.*``."""
  return {
    prefix + ('' if k.startswith('text_model.') else 'text_model.') + k: v
    for k, v in state_dict.items()
  }
