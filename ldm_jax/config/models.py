"""Typed, frozen model configs, built once from a ``ConfigDict``: the one declaration of each
model option (its name, type, default and meaning). ``base_config()``'s group is made from it, the
module takes it, and the diffusers mapping (``convert/diffusers_unet.py``) reads and writes it.

Adding a UNet option touches: ``UNetConfig`` (here), ``nn/unet.py`` (which uses it) and, if
diffusers has it, one row of ``convert/diffusers_unet.UNET_FIELDS``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """CompVis ``UNetModel``'s constructor arguments (the reference's names; see
  ldm/modules/diffusionmodules/openaimodel.py). ``attention_resolutions`` are downsampling factors
  (1 = latent resolution); ``num_classes=0`` and ``context_dim=0`` mean none; a -1 head setting
  means "use the other one"."""

  model_channels: int = 128
  channel_mult: tuple[int, ...] = (1, 2, 4)
  num_res_blocks: int = 2
  attention_resolutions: tuple[int, ...] = ()
  num_heads: int = -1
  num_head_channels: int = -1
  use_scale_shift_norm: bool = False
  resblock_updown: bool = False
  use_spatial_transformer: bool = False
  transformer_depth: int = 1
  # one depth per level (SDXL base: (0, 2, 10)), the middle block taking the last (generative-
  # models' transformer_depth list and transformer_depth_middle); () = transformer_depth everywhere
  transformer_depths: tuple[int, ...] = ()
  context_dim: int = 0
  legacy: bool = True
  use_linear_in_transformer: bool = False  # Stable Diffusion 2.x: Linear proj_in/proj_out
  dropout: float = 0.0
  conv_resample: bool = True
  num_classes: int = 0
  # > 0: the vector conditioning y [B, adm_in_channels] through Linear-SiLU-Linear added to the
  # time embedding (ADM's num_classes='sequential'; SDXL: pooled text + size embeddings)
  adm_in_channels: int = 0
  in_channels: int = 0  # 0 = the latent channels (concat conditioning adds inputs)
  out_channels: int = 0  # 0 = the latent channels

  def __post_init__(self):
    # hashable, whatever was given; attention_resolutions is a set of factors (sorted)
    object.__setattr__(self, 'channel_mult', tuple(int(v) for v in self.channel_mult))
    object.__setattr__(
      self, 'attention_resolutions', tuple(sorted(int(v) for v in self.attention_resolutions))
    )
    object.__setattr__(self, 'transformer_depths', tuple(int(v) for v in self.transformer_depths))
    if self.transformer_depths and len(self.transformer_depths) != len(self.channel_mult):
      raise ValueError(
        f'unet.transformer_depths {self.transformer_depths} has {len(self.transformer_depths)} '
        f'entries for {len(self.channel_mult)} levels (channel_mult): give one per level'
      )
    if self.adm_in_channels and self.num_classes:
      raise ValueError('unet: set num_classes (labels) or adm_in_channels (a vector), not both')

  def depth(self, level: int | None = None) -> int:
    """The SpatialTransformer depth at ``level`` (None: the middle block)."""
    if not self.transformer_depths:
      return self.transformer_depth
    return self.transformer_depths[-1 if level is None else level]

  @classmethod
  def defaults(cls) -> dict:
    """The fields and defaults, as base_config()'s ``unet`` group."""
    return dataclasses.asdict(cls())

  @classmethod
  def from_config(cls, config) -> UNetConfig:
    """config.unet of a full config, the latent channels filled in for 0 channels. Keys the
    saved config of an older run lacks take their defaults."""
    u, latent = config.unet, config.first_stage.embed_dim
    fields = {f.name: u[f.name] for f in dataclasses.fields(cls) if f.name in u}
    fields['in_channels'] = fields.get('in_channels') or latent
    fields['out_channels'] = fields.get('out_channels') or latent
    return cls(**fields)


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
  """The text encoder of config.cond_stage (kinds 'clip', 'openclip': ``nn.clip``'s CLIP text
  transformer; 'bert': the reference's BERTEmbedder), built once from the ConfigDict: ``width``
  (cond_stage.embed_dim), ``layers`` (n_layer), ``heads`` (n_head, 0 = width // 64), ``act``,
  ``layer`` ('last' or 'penultimate'), ``projection_dim``, ``vocab_size``, ``max_len``
  (max_seq_len), ``token_init_std`` (bert)."""

  kind: str
  width: int
  layers: int
  heads: int
  act: str = 'quick_gelu'
  layer: str = 'last'
  projection_dim: int = 0
  vocab_size: int = 49408
  max_len: int = 77
  token_init_std: float = 0.02

  @classmethod
  def sdxl(cls, config) -> tuple[TextEncoderConfig, ...]:
    """The SDXL conditioner's encoders in checkpoint order: cond_stage.first_encoder (CLIP) if
    it has a width, then the pooled one (OpenCLIP, with its projection)."""
    cs = config.cond_stage
    main = cls._of(cs, 'openclip')
    first = cs.first_encoder
    if not first.embed_dim:
      return (main,)
    heads = first.n_head or first.embed_dim // 64
    return (
      cls(kind='clip', width=first.embed_dim, layers=first.n_layer, heads=heads, act=first.act,
          layer=cs.layer, vocab_size=first.vocab_size, max_len=cs.max_seq_len),
      main,
    )  # fmt: skip

  @classmethod
  def from_config(cls, config) -> TextEncoderConfig:
    cs = config.cond_stage
    if cs.kind not in ('clip', 'openclip', 'bert'):
      raise ValueError(f'cond_stage.kind={cs.kind!r} has no text encoder')
    return cls._of(cs, cs.kind)

  @classmethod
  def _of(cls, cs, kind: str) -> TextEncoderConfig:
    """The encoder the main fields of config.cond_stage describe, as ``kind``."""
    return cls(
      kind=kind,
      width=cs.embed_dim,
      layers=cs.n_layer,
      heads=cs.get('n_head', 0) or cs.embed_dim // 64,
      act=cs.get('act', 'quick_gelu'),
      layer=cs.get('layer', 'last'),
      projection_dim=cs.get('projection_dim', 0),
      vocab_size=cs.vocab_size,
      max_len=cs.max_seq_len,
      token_init_std=cs.get('token_init_std', 0.02),
    )

  def clip_fields(self) -> dict:
    """The fields of nn.clip's FrozenCLIPEmbedder / FrozenOpenCLIPEmbedder."""
    names = ('width', 'layers', 'heads', 'act', 'layer', 'projection_dim', 'vocab_size', 'max_len')
    return {k: getattr(self, k) for k in names}
