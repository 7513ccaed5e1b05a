"""diffusers' parameter names <-> the CompVis ones, both directions from one plan per model.

A plan is a list of ``(diffusers module, CompVis module, kind)``: every key under the one module
is the same tensor under the other, its remaining name translated by ``kind``:

- ``same``: unchanged (SpatialTransformer = Transformer2DModel, convs, norms, embeddings);
- ``resnet``: the UNet ResBlock (``norm1`` = ``in_layers.0``, ...);
- ``vae_resnet``: the autoencoder ResnetBlock (``conv_shortcut`` = ``nin_shortcut``);
- ``vae_attn``: the autoencoder AttnBlock (``to_q`` Linear [c, c] = ``q`` 1x1 conv [c, c, 1, 1]);
- ``legacy_attn``: the UNet AttentionBlock (diffusers' q, k, v Linears = one qkv Conv1d in the
  legacy head-major order, channel head * 3d + {q, k, v} * d + i).

The plans are built from the architecture (config fields), never from which keys a file holds, so
that the same plan reads a diffusers folder and writes one (``ldm_jax.export --format=diffusers``).
"""

from __future__ import annotations

import re

import numpy as np

from ldm_jax.convert.torch_names import ConversionError

_RESNET = (
  ('norm1.', 'in_layers.0.'),
  ('conv1.', 'in_layers.2.'),
  ('time_emb_proj.', 'emb_layers.1.'),
  ('norm2.', 'out_layers.0.'),
  ('conv2.', 'out_layers.3.'),
  ('conv_shortcut.', 'skip_connection.'),
)
_VAE_RESNET = (('conv_shortcut.', 'nin_shortcut.'),)
_VAE_ATTN = (
  ('group_norm.', 'norm.'),
  ('to_q.', 'q.'),
  ('to_k.', 'k.'),
  ('to_v.', 'v.'),
  ('to_out.0.', 'proj_out.'),
)
_TABLES = {'same': (), 'resnet': _RESNET, 'vae_resnet': _VAE_RESNET, 'vae_attn': _VAE_ATTN}


def _translate(rest: str, table, to_compvis: bool) -> str:
  for d, c in table:
    src, dst = (d, c) if to_compvis else (c, d)
    if rest.startswith(src):
      return dst + rest[len(src) :]
  return rest


def _apply(sd: dict, plan, to_compvis: bool, strict: bool, heads_of=None) -> dict:
  """Rename the keys of ``sd`` (no prefixes) by ``plan``; ``strict``: every key must be placed."""
  sd, out = dict(sd), {}
  for d, c, kind in plan:
    src, dst = (d, c) if to_compvis else (c, d)
    group = {k[len(src) + 1 :]: sd.pop(k) for k in [k for k in sd if k.startswith(src + '.')]}
    if not group:
      continue
    if kind == 'legacy_attn':
      fn = _legacy_to_compvis if to_compvis else _legacy_to_diffusers
      group = fn(group, heads_of, src)
    for rest, value in group.items():
      name = _translate(rest, _TABLES.get(kind, ()), to_compvis)
      compvis_name = name if to_compvis else rest
      if kind == 'vae_attn' and re.match(r'(q|k|v|proj_out)\.weight$', compvis_name):
        if to_compvis and value.ndim == 2:  # Linear -> the reference's 1x1 conv
          value = value[:, :, None, None]
        elif not to_compvis and value.ndim == 4:
          value = value[:, :, 0, 0]
      out[f'{dst}.{name}'] = value
  if strict and sd:
    side = 'diffusers' if to_compvis else 'CompVis'
    raise ConversionError(f'{len(sd)} {side} keys have no place in the plan: {sorted(sd)[:20]}')
  out.update(sd)
  return out


def _legacy_to_compvis(g: dict, heads_of, where: str) -> dict:
  if 'group_norm.weight' not in g:
    raise ConversionError(
      f'{where} has no GroupNorm (diffusers leaves it out of the middle block when '
      "resnet_time_scale_shift='scale_shift' and attn_norm_num_groups is unset): the CompVis "
      'AttentionBlock always normalises, so this UNet has no CompVis counterpart'
    )
  w = [g.pop(f'to_{n}.weight') for n in 'qkv']
  b = [g.pop(f'to_{n}.bias') for n in 'qkv']
  c = w[0].shape[0]
  heads = heads_of(c)
  d = c // heads
  return {
    'norm.weight': g.pop('group_norm.weight'),
    'norm.bias': g.pop('group_norm.bias'),
    'qkv.weight': np.stack([x.reshape(heads, d, c) for x in w], 1).reshape(3 * c, c, 1),
    'qkv.bias': np.stack([x.reshape(heads, d) for x in b], 1).reshape(3 * c),
    'proj_out.weight': g.pop('to_out.0.weight')[:, :, None],
    'proj_out.bias': g.pop('to_out.0.bias'),
    **g,
  }


def _legacy_to_diffusers(g: dict, heads_of, where: str) -> dict:
  del where
  qkv = g.pop('qkv.weight')
  c = qkv.shape[1]
  heads = heads_of(c)
  d = c // heads
  w = np.asarray(qkv).reshape(heads, 3, d, c)
  b = np.asarray(g.pop('qkv.bias')).reshape(heads, 3, d)
  out = {'group_norm.weight': g.pop('norm.weight'), 'group_norm.bias': g.pop('norm.bias')}
  for i, n in enumerate('qkv'):
    out[f'to_{n}.weight'] = np.ascontiguousarray(w[:, i].reshape(c, c))
    out[f'to_{n}.bias'] = np.ascontiguousarray(b[:, i].reshape(c))
  out['to_out.0.weight'] = np.asarray(g.pop('proj_out.weight'))[:, :, 0]
  out['to_out.0.bias'] = g.pop('proj_out.bias')
  return {**out, **g}


# -- the UNet ------------------------------------------------------------------------------------
def unet_plan(fields) -> list:
  """The plan of a CompVis UNet (config.unet fields: channel_mult, num_res_blocks,
  attention_resolutions, resblock_updown, use_spatial_transformer) as diffusers' UNet2DModel /
  UNet2DConditionModel lays it out."""
  nrb, levels = int(fields['num_res_blocks']), len(fields['channel_mult'])
  attn = [2**i in tuple(fields['attention_resolutions']) for i in range(levels)]
  attn_kind = 'same' if fields.get('use_spatial_transformer') else 'legacy_attn'
  updown = bool(fields['resblock_updown'])
  plan = [
    ('conv_in', 'input_blocks.0.0', 'same'),
    ('time_embedding.linear_1', 'time_embed.0', 'same'),
    ('time_embedding.linear_2', 'time_embed.2', 'same'),
  ]
  if fields.get('adm_in_channels'):  # SDXL's vector input y
    plan += [('add_embedding.linear_1', 'label_emb.0.0', 'same'),
             ('add_embedding.linear_2', 'label_emb.0.2', 'same')]  # fmt: skip
  idx = 1
  for i in range(levels):
    for j in range(nrb):
      plan.append((f'down_blocks.{i}.resnets.{j}', f'input_blocks.{idx}.0', 'resnet'))
      if attn[i]:
        plan.append((f'down_blocks.{i}.attentions.{j}', f'input_blocks.{idx}.1', attn_kind))
      idx += 1
    if i < levels - 1:
      src = f'down_blocks.{i}.downsamplers.0'
      plan.append((src, f'input_blocks.{idx}.0', 'resnet') if updown else
                  (f'{src}.conv', f'input_blocks.{idx}.0.op', 'same'))  # fmt: skip
      idx += 1
  plan += [
    ('mid_block.resnets.0', 'middle_block.0', 'resnet'),
    ('mid_block.attentions.0', 'middle_block.1', attn_kind),
    ('mid_block.resnets.1', 'middle_block.2', 'resnet'),
  ]
  idx = 0
  for i in range(levels):
    level = levels - 1 - i
    for j in range(nrb + 1):
      plan.append((f'up_blocks.{i}.resnets.{j}', f'output_blocks.{idx}.0', 'resnet'))
      if attn[level]:
        plan.append((f'up_blocks.{i}.attentions.{j}', f'output_blocks.{idx}.1', attn_kind))
      if j == nrb and i < levels - 1:
        src, dst = f'up_blocks.{i}.upsamplers.0', f'output_blocks.{idx}.{2 if attn[level] else 1}'
        plan.append((src, dst, 'resnet') if updown else (f'{src}.conv', f'{dst}.conv', 'same'))
      idx += 1
  plan += [('conv_norm_out', 'out.0', 'same'), ('conv_out', 'out.2', 'same')]
  return plan


def _heads_of(fields):
  return lambda c: (
    c // fields['num_head_channels'] if fields['num_head_channels'] > 0 else fields['num_heads']
  )


def unet_to_compvis_names(state_dict: dict, fields, prefix: str = 'model.diffusion_model.') -> dict:
  """diffusers UNet names -> CompVis openaimodel names (input_blocks / middle_block / ...)."""
  out = _apply(state_dict, unet_plan(fields), True, True, _heads_of(fields))
  return {prefix + k: v for k, v in out.items()}


def unet_to_diffusers_names(state_dict: dict, fields, prefix: str = 'model.diffusion_model.'):
  """The CompVis UNet keys under ``prefix`` -> diffusers' names (every one placed)."""
  sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
  return _apply(sd, unet_plan(fields), False, True, _heads_of(fields))


# -- the autoencoder ------------------------------------------------------------------------------
def first_stage_plan(levels: int, num_res_blocks: int) -> list:
  """The plan of a CompVis Encoder/Decoder (diffusers numbers the decoder's levels top down).
  Keys outside it (conv_in, conv_out, quant_conv, post_quant_conv, quantize) keep their names."""
  plan = []
  for i in range(levels):
    enc, dec, level = f'encoder.down_blocks.{i}', f'decoder.up_blocks.{i}', levels - 1 - i
    for j in range(num_res_blocks + 1):
      if j < num_res_blocks:
        plan.append((f'{enc}.resnets.{j}', f'encoder.down.{i}.block.{j}', 'vae_resnet'))
        plan.append((f'{enc}.attentions.{j}', f'encoder.down.{i}.attn.{j}', 'vae_attn'))
      plan.append((f'{dec}.resnets.{j}', f'decoder.up.{level}.block.{j}', 'vae_resnet'))
      plan.append((f'{dec}.attentions.{j}', f'decoder.up.{level}.attn.{j}', 'vae_attn'))
    plan.append((f'{enc}.downsamplers.0', f'encoder.down.{i}.downsample', 'same'))
    plan.append((f'{dec}.upsamplers.0', f'decoder.up.{level}.upsample', 'same'))
  for part in ('encoder', 'decoder'):
    plan += [
      (f'{part}.mid_block.resnets.0', f'{part}.mid.block_1', 'vae_resnet'),
      (f'{part}.mid_block.attentions.0', f'{part}.mid.attn_1', 'vae_attn'),
      (f'{part}.mid_block.resnets.1', f'{part}.mid.block_2', 'vae_resnet'),
      (f'{part}.conv_norm_out', f'{part}.norm_out', 'same'),
    ]
  return plan


def first_stage_to_compvis(state_dict: dict, cfg: dict, prefix: str = 'first_stage_model.') -> dict:
  """diffusers VQModel/AutoencoderKL names -> CompVis Encoder/Decoder names."""
  plan = first_stage_plan(len(cfg['block_out_channels']), int(cfg['layers_per_block']))
  return {prefix + k: v for k, v in _apply(state_dict, plan, True, False).items()}


def first_stage_to_diffusers(state_dict: dict, fields, prefix: str = 'first_stage_model.'):
  """The CompVis first-stage keys under ``prefix`` -> diffusers' names (config.first_stage)."""
  sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
  plan = first_stage_plan(len(fields['ch_mult']), int(fields['num_res_blocks']))
  return _apply(sd, plan, False, False)


# -- LDMBert (the CompVis BERTEmbedder, as diffusers ported it) ----------------------------------
_BERT_LAYER = (  # diffusers under model.layers.{i}., CompVis under attn_layers.layers.
  ('self_attn_layer_norm.', '{a}.0.'),
  ('self_attn.q_proj.', '{a}.1.to_q.'),
  ('self_attn.k_proj.', '{a}.1.to_k.'),
  ('self_attn.v_proj.', '{a}.1.to_v.'),
  ('self_attn.out_proj.', '{a}.1.to_out.'),
  ('final_layer_norm.', '{f}.0.'),
  ('fc1.', '{f}.1.net.0.0.'),
  ('fc2.', '{f}.1.net.2.'),
)
_BERT_FIXED = (
  ('model.embed_tokens.weight', 'token_emb.weight'),
  ('model.embed_positions.weight', 'pos_emb.emb.weight'),
  ('model.layer_norm.weight', 'norm.weight'),
  ('model.layer_norm.bias', 'norm.bias'),
  ('to_logits.weight', 'to_logits.weight'),
  ('to_logits.bias', 'to_logits.bias'),
)


def _bert_names(n_layer: int) -> list:
  """(diffusers name prefix, CompVis name prefix) of every LDMBert tensor group."""
  pairs = list(_BERT_FIXED)
  for i in range(n_layer):
    for d, c in _BERT_LAYER:
      pairs.append(
        (f'model.layers.{i}.{d}', 'attn_layers.layers.' + c.format(a=2 * i, f=2 * i + 1))
      )
  return pairs


def _rename_all(sd: dict, pairs, what: str) -> dict:
  out = {}
  for k, v in sd.items():
    for src, dst in pairs:
      if k == src or (src.endswith('.') and k.startswith(src)):
        out[dst + k[len(src) :]] = v
        break
    else:
      raise ConversionError(f'{what} key {k} has no place')
  return out


def ldmbert_to_compvis(state_dict: dict, prefix: str = 'cond_stage_model.') -> dict:
  """diffusers' LDMBertModel -> the CompVis BERTEmbedder's names."""
  layers = {int(m[1]) for k in state_dict if (m := re.match(r'model\.layers\.(\d+)\.', k))}
  out = _rename_all(state_dict, _bert_names(max(layers, default=-1) + 1), 'LDMBert')
  return {f'{prefix}transformer.{k}': v for k, v in out.items()}


def ldmbert_to_diffusers(state_dict: dict, n_layer: int, prefix: str = 'cond_stage_model.'):
  """The CompVis BERTEmbedder keys under ``prefix`` -> diffusers' LDMBertModel names."""
  t = prefix + 'transformer.'
  sd = {k[len(t) :]: v for k, v in state_dict.items() if k.startswith(t)}
  return _rename_all(sd, [(c, d) for d, c in _bert_names(n_layer)], 'BERTEmbedder')
