"""CLIP's text embedding for the retrieval-augmented model (rdm_768; knn2img.py conditions on the
L2-normalised CLIP ViT-L/14 text embedding of the prompt, [B, 1, 768]).

  python -m ldm_jax.convert clip --path=CLIP_FOLDER --out=runs/clip_l14
  python -m ldm_jax.convert compvis --ckpt=rdm.ckpt --config=configs/released/rdm_768.py \
      --config.cond_stage.clip_text=runs/clip_l14 --out=runs/rdm
  python sample.py --workdir=runs/rdm --prompt='a painting of a fox' --guidance_scale=5

``CLIP_FOLDER`` is a transformers CLIPModel or CLIPTextModelWithProjection folder (config.json,
model.safetensors, vocab.json, merges.txt), e.g. a download of openai/clip-vit-large-patch14. DIR
then holds the text model with its projection (``params.npz``, ``config.json``) and the tokenizer
files: ``tasks.embeddings`` reads it. When the folder has the vision tower (a CLIPModel), it is
converted too (``vision_params.npz``, ``vision_config.json``): the CLIP score of text-to-image
evaluation (``ldm_jax.eval.clip_score``) reads both towers.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from ldm_jax import storage
from ldm_jax.convert.clip_names import clip_fields
from ldm_jax.convert.diffusers import read_model_folder
from ldm_jax.convert.torch_names import ConversionError, load_state_dict

_TOKENIZER_FILES = ('vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json',
                    'tokenizer.json')  # fmt: skip


def convert_clip_text(path: str, out: str) -> dict:
  from ldm_jax.nn.clip import CLIPTextModel

  cfg, sd = read_model_folder(path)
  text_cfg = cfg.get('text_config', cfg)
  proj = int(cfg.get('projection_dim') or text_cfg.get('projection_dim') or 0)
  if 'text_projection.weight' not in sd or not proj:
    raise ConversionError(
      f'{path}: no text_projection (a CLIPModel or CLIPTextModelWithProjection)'
    )
  fields = clip_fields(text_cfg, None)
  model_cfg = dict(
    width=fields['embed_dim'],
    layers=fields['n_layer'],
    heads=fields['n_head'],
    act=fields['act'],
    projection_dim=proj,
    vocab_size=fields['vocab_size'],
    max_len=fields['max_seq_len'],
  )
  model = CLIPTextModel(**model_cfg)
  template = jax.eval_shape(
    lambda k: model.init(k, np.zeros((1, 2), np.int32)), jax.random.PRNGKey(0)
  )['params']
  state = {}
  for k, v in sd.items():
    if k.startswith(('vision_model.', 'visual_projection.')) or k.endswith('position_ids'):
      continue
    if k == 'text_projection.weight':
      state['text_projection'] = np.asarray(v).T  # a Linear [proj, width]: x @ W.T
    elif k == 'logit_scale':
      state['logit_scale'] = np.asarray(v)
    else:
      state[('' if k.startswith('text_model.') else 'text_model.') + k] = v
  state.setdefault('logit_scale', np.asarray(np.log(1 / 0.07), np.float32))
  params = load_state_dict(template, state)
  vision = _convert_vision(cfg, sd, proj, out) if 'visual_projection.weight' in sd else None
  from flax.traverse_util import flatten_dict

  storage.makedirs(out)
  flat = {'/'.join(k): np.asarray(v) for k, v in flatten_dict(params).items()}
  storage.save_npz(storage.join(out, 'params.npz'), **flat)
  storage.write_text(storage.join(out, 'config.json'), json.dumps(model_cfg, indent=1))
  copied = []
  for name in _TOKENIZER_FILES:
    src = os.path.join(path, name)
    if os.path.exists(src):
      storage.write_bytes(storage.join(out, name), storage.read_bytes(src))
      copied.append(name)
  if not {'vocab.json', 'merges.txt'} <= set(copied) and 'tokenizer.json' not in copied:
    raise ConversionError(f'{path} has no CLIP tokenizer files (vocab.json + merges.txt)')
  return {'path': path, 'out': out, 'model': model_cfg, 'vision': vision, 'tokenizer': copied}


def _convert_vision(cfg: dict, sd: dict, proj: int, out: str) -> dict:
  from flax.traverse_util import flatten_dict

  from ldm_jax.nn.clip import CLIPVisionModel

  v = cfg.get('vision_config', {})
  act = {'quick_gelu': 'quick_gelu', 'gelu': 'gelu'}.get(v.get('hidden_act', 'quick_gelu'))
  if act is None:
    raise ConversionError(f'CLIP vision activation {v.get("hidden_act")!r} is not supported')
  vision_cfg = dict(
    width=int(v.get('hidden_size', 768)),
    layers=int(v.get('num_hidden_layers', 12)),
    heads=int(v.get('num_attention_heads', 12)),
    act=act,
    image_size=int(v.get('image_size', 224)),
    patch=int(v.get('patch_size', 32)),
    projection_dim=proj,
    hidden=int(v.get('intermediate_size', 0)),
  )
  model = CLIPVisionModel(**vision_cfg)
  size = vision_cfg['image_size']
  template = jax.eval_shape(
    lambda k: model.init(k, np.zeros((1, size, size, 3), np.float32)), jax.random.PRNGKey(0)
  )['params']
  state = {
    k: v
    for k, v in sd.items()
    if k.startswith(('vision_model.', 'visual_projection.')) and not k.endswith('position_ids')
  }
  params = load_state_dict(template, state)
  flat = {'/'.join(k): np.asarray(x) for k, x in flatten_dict(params).items()}
  storage.save_npz(storage.join(out, 'vision_params.npz'), **flat)
  storage.write_text(storage.join(out, 'vision_config.json'), json.dumps(vision_cfg, indent=1))
  return vision_cfg
