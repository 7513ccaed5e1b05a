"""OpenCLIP's text-tower names -> transformers' CLIPTextModel names (``ldm_jax.nn.clip``).

SD 2.x checkpoints hold the OpenCLIP ViT-H/14 text tower as ``cond_stage_model.model.*`` in
OpenCLIP's layout (``transformer.resblocks.i.attn.in_proj_weight``: q, k and v stacked); diffusers
folders and SD 1.x checkpoints hold ``text_model.*``. The renaming below is the whole difference.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

_RENAMES = (
  (r'^token_embedding\.weight$', 'text_model.embeddings.token_embedding.weight'),
  (r'^positional_embedding$', 'text_model.embeddings.position_embedding.weight'),
  (r'^ln_final\.', 'text_model.final_layer_norm.'),
  (r'^transformer\.resblocks\.(\d+)\.ln_1\.', r'text_model.encoder.layers.\1.layer_norm1.'),
  (r'^transformer\.resblocks\.(\d+)\.ln_2\.', r'text_model.encoder.layers.\1.layer_norm2.'),
  (r'^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.', r'text_model.encoder.layers.\1.mlp.fc1.'),
  (r'^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.', r'text_model.encoder.layers.\1.mlp.fc2.'),
  (
    r'^transformer\.resblocks\.(\d+)\.attn\.out_proj\.',
    r'text_model.encoder.layers.\1.self_attn.out_proj.',
  ),
)
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
      q, k, v = np.split(np.asarray(value), 3, axis=0)
      for part, a in zip('qkv', (q, k, v)):
        out[f'{prefix}text_model.encoder.layers.{m[1]}.self_attn.{part}_proj.{m[2]}'] = a
      continue
    for pattern, repl in _RENAMES:
      if re.match(pattern, name):
        name = re.sub(pattern, repl, name)
        break
    out[prefix + name] = value
  return out
