"""The CompVis UNet's options (``config.UNetConfig``) and diffusers' UNet2DModel /
UNet2DConditionModel config.json, both ways, in one place: the importer (``unet_fields``) and the
exporter (``unet_config``) read the same tables, so they cannot drift apart.

``UNET_FIELDS`` maps the options that are one diffusers key each; the block layout (channels,
attention levels, heads, up/down blocks) is derived below, in both directions side by side.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from ldm_jax.config import UNetConfig
from ldm_jax.convert.torch_names import ConversionError
from ldm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Field:
  """UNetConfig.<ours> <-> config.json[<theirs>]; ``conditional``: UNet2DConditionModel only."""

  ours: str
  theirs: str
  to_theirs: Callable = lambda v: v
  to_ours: Callable = lambda v: v
  conditional: bool = False


def _scale_shift(v: bool) -> str:
  return 'scale_shift' if v else 'default'


def _first(v) -> int:  # transformer_layers_per_block may be one per level
  return int(v[0] if isinstance(v, (list, tuple)) else v)


UNET_FIELDS = (
  Field('num_res_blocks', 'layers_per_block', int, int),
  Field('in_channels', 'in_channels', int, int),
  Field('out_channels', 'out_channels', int, int),
  Field('dropout', 'dropout', float, float),
  Field('use_scale_shift_norm', 'resnet_time_scale_shift', _scale_shift, 'scale_shift'.__eq__),
  Field('context_dim', 'cross_attention_dim', int, int, conditional=True),
  Field('transformer_depth', 'transformer_layers_per_block', int, _first, conditional=True),
  Field('use_linear_in_transformer', 'use_linear_projection', bool, bool, conditional=True),
)
# Defaults diffusers assumes when a config.json leaves a key out.
_THEIR_DEFAULTS = {
  'dropout': 0.0,
  'resnet_time_scale_shift': 'default',
  'transformer_layers_per_block': 1,
  'use_linear_projection': False,
}
# diffusers UNet config fields whose value the CompVis UNet fixes: the importer requires them,
# the exporter writes them.
UNET_FIXED_FIELDS = {
  'act_fn': 'silu',
  'norm_num_groups': 32,
  'flip_sin_to_cos': True,
  'freq_shift': 0,
  'time_embedding_type': 'positional',
  'downsample_padding': 1,
  'mid_block_scale_factor': 1,
  'center_input_sample': False,
}
_UNSUPPORTED_NONE = ('class_embed_type', 'encoder_hid_dim')
_CLASSES = ('UNet2DModel', 'UNet2DConditionModel')


# -- diffusers -> ours ---------------------------------------------------------------------------
def unet_fields(cfg: dict) -> dict:
  """config.unet fields from a UNet2DModel / UNet2DConditionModel config.json (CompVis-shaped)."""
  cls = cfg.get('_class_name')
  if cls not in _CLASSES:
    raise ConversionError(f'expected a UNet2DModel or UNet2DConditionModel config, got {cls!r}')
  cond = cls == 'UNet2DConditionModel'
  for key, value in UNET_FIXED_FIELDS.items():
    if cfg.get(key, value) != value:
      raise ConversionError(
        f'{cls}: {key}={cfg[key]!r} has no CompVis counterpart (supported: [{value!r}])'
      )
  for key in _UNSUPPORTED_NONE:
    if cfg.get(key) is not None:
      raise ConversionError(f'{cls}: {key}={cfg[key]!r} has no CompVis counterpart')
  if cfg.get('addition_embed_type') not in (None, 'text_time'):
    raise ConversionError(
      f'{cls}: addition_embed_type={cfg["addition_embed_type"]!r} has no CompVis counterpart '
      "(supported: 'text_time', SDXL's vector conditioning)"
    )
  fields = {
    f.ours: f.to_ours(cfg.get(f.theirs, _THEIR_DEFAULTS.get(f.theirs)))
    for f in UNET_FIELDS
    if cond or not f.conditional
  }
  chans = list(cfg['block_out_channels'])
  down = list(cfg['down_block_types'])
  with_attn = [t.startswith(('Attn', 'CrossAttn')) for t in down]
  fields.update(
    model_channels=chans[0],
    channel_mult=tuple(c // chans[0] for c in chans),
    attention_resolutions=tuple(2**i for i, a in enumerate(with_attn) if a),
    resblock_updown=cfg.get('downsample_type', 'conv') == 'resnet'
    or any(t.startswith('Resnet') for t in down),
  )
  if cond:
    fields.update(use_spatial_transformer=True, legacy=False, **_heads_of_conditional(cfg, chans))
    fields.update(_depths_and_vector(cfg, with_attn))
  elif cfg.get('attention_head_dim') is None:  # diffusers: one head of all channels
    fields.update(num_heads=1, num_head_channels=-1)
  else:
    fields.update(num_head_channels=int(cfg['attention_head_dim']), num_heads=-1)
  return fields


def _depths_and_vector(cfg: dict, with_attn: list) -> dict:
  """transformer_depths from a per-level transformer_layers_per_block (0 where a level has no
  attention, as generative-models writes it), adm_in_channels from SDXL's add_embedding."""
  out = {'adm_in_channels': 0, 'transformer_depths': ()}
  depth = cfg.get('transformer_layers_per_block', 1)
  if isinstance(depth, (list, tuple)):
    if any(isinstance(d, (list, tuple)) for d in depth):
      raise ConversionError('transformer_layers_per_block per block (nested lists): no counterpart')
    if len(set(depth)) > 1:
      out['transformer_depths'] = tuple(int(d) if a else 0 for d, a in zip(depth, with_attn))
  if cfg.get('addition_embed_type') == 'text_time':
    out['adm_in_channels'] = int(cfg['projection_class_embeddings_input_dim'])
  return out


def _heads_of_conditional(cfg: dict, chans: list) -> dict:
  """diffusers' UNet2DConditionModel calls the number of heads attention_head_dim; SD 2 gives one
  count per level ([5, 10, 20, 20]): CompVis' num_head_channels (64 channels per head)."""
  heads = cfg.get('num_attention_heads') or cfg.get('attention_head_dim', 8)
  counts = list(heads) if isinstance(heads, (list, tuple)) else [heads]
  if len(set(counts)) == 1:
    return dict(num_heads=int(counts[0]), num_head_channels=-1)
  widths = {c // h for c, h in zip(chans, counts)}
  if len(widths) != 1 or any(c % h for c, h in zip(chans, counts)):
    raise ConversionError(
      f'UNet2DConditionModel: head counts {heads} for channels {chans} are neither one count '
      'nor one head width: no CompVis counterpart'
    )
  return dict(num_heads=-1, num_head_channels=widths.pop())


# -- ours -> diffusers ---------------------------------------------------------------------------
def unet_config(config, diffusers_version: str) -> dict:
  """The UNet2DModel (unconditional, superres) or UNet2DConditionModel (cross-attention)
  config.json of config.unet."""
  from ldm_jax.latent_diffusion import latent_shape

  u = UNetConfig.from_config(config)
  for bad, why in (
    (u.num_classes > 0, 'num_classes (class embedding added to the time embedding)'),
    (
      u.adm_in_channels and not u.use_spatial_transformer,
      'adm_in_channels without cross-attention',
    ),
    (not u.conv_resample, 'conv_resample=False'),
    (u.use_spatial_transformer and u.resblock_updown, 'resblock_updown with cross-attention'),
  ):
    if bad:
      raise UserError(f'unet {why} has no diffusers counterpart')
  chans = [u.model_channels * m for m in u.channel_mult]
  attn = [2**i in u.attention_resolutions for i in range(len(chans))]
  common = dict(
    _diffusers_version=diffusers_version,
    sample_size=latent_shape(config)[0],
    block_out_channels=chans,
    **{
      f.theirs: f.to_theirs(getattr(u, f.ours))
      for f in UNET_FIELDS
      if u.use_spatial_transformer or not f.conditional
    },
    **UNET_FIXED_FIELDS,
  )
  counts = [ch // u.num_head_channels if u.num_head_channels > 0 else u.num_heads for ch in chans]
  if u.use_spatial_transformer:
    common.update(_vector_and_depths(config, u))
    return dict(
      _class_name='UNet2DConditionModel',
      down_block_types=['CrossAttnDownBlock2D' if a else 'DownBlock2D' for a in attn],
      up_block_types=['CrossAttnUpBlock2D' if a else 'UpBlock2D' for a in attn[::-1]],
      mid_block_type='UNetMidBlock2DCrossAttn',
      # diffusers' "attention_head_dim" of this model is the number of heads (per level)
      attention_head_dim=counts if u.num_head_channels > 0 else u.num_heads,
      **common,
    )
  return dict(_class_name='UNet2DModel', **_unconditional_blocks(u, chans, counts, attn), **common)


def _vector_and_depths(config, u: UNetConfig) -> dict:
  """SDXL's keys: per-level transformer_layers_per_block (1 where a level has no attention, as
  diffusers writes it) and the text_time addition embedding."""
  out = {}
  if u.transformer_depths:
    out['transformer_layers_per_block'] = [max(d, 1) for d in u.transformer_depths]
  if u.adm_in_channels:
    out.update(
      addition_embed_type='text_time',
      addition_time_embed_dim=int(config.cond_stage.micro_dim),
      projection_class_embeddings_input_dim=u.adm_in_channels,
    )
  return out


def _unconditional_blocks(u: UNetConfig, chans, counts, attn) -> dict:
  """UNet2DModel's blocks: one head *width* for every attention (the middle one included)."""
  widths = {ch // k for ch, k, a in zip(chans, counts, attn) if a} | {chans[-1] // counts[-1]}
  if u.num_heads == 1 and u.num_head_channels <= 0:
    head = None  # diffusers: one head of all channels
  elif len(widths) == 1:
    head = widths.pop()
  else:
    raise UserError(
      f'unet: {u.num_heads} heads on attention levels of {chans} channels are heads of '
      f"{sorted(widths)} channels, but diffusers' UNet2DModel has one head width for all "
      'of them; export --format=compvis'
    )
  down = 'ResnetDownsampleBlock2D' if u.resblock_updown else 'DownBlock2D'
  up = 'ResnetUpsampleBlock2D' if u.resblock_updown else 'UpBlock2D'
  return dict(
    down_block_types=['AttnDownBlock2D' if a else down for a in attn],
    up_block_types=['AttnUpBlock2D' if a else up for a in attn[::-1]],
    downsample_type='resnet' if u.resblock_updown else 'conv',
    upsample_type='resnet' if u.resblock_updown else 'conv',
    attention_head_dim=head,
    attn_norm_num_groups=32,  # else diffusers leaves the middle attention's GroupNorm out
  )
