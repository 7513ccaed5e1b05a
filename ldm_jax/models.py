"""Build the models of a config with plain Python, and glue them into a latent diffusion model.

``LatentDiffusion`` is a frozen dataclass of three linen modules (first stage, UNet, optional
conditioner) and a schedule; its methods are pure functions of explicit parameter pytrees:
``params = {'unet': ..., 'cond_stage': ...}`` (trainable) and ``first_stage_params`` (frozen).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ldm_jax.autoencoder import AutoencoderKL, VQModel
from ldm_jax.conditioning import BERTEmbedder, ClassEmbedder, SpatialRescaler
from ldm_jax.config import COND_KINDS, conditioning_key, downsampling_factor
from ldm_jax.diffusion import model_output_to_eps
from ldm_jax.discriminator import NLayerDiscriminator
from ldm_jax.distributions import DiagonalGaussian
from ldm_jax.schedule import Schedule, make_schedule
from ldm_jax.unet import UNetModel


def build_first_stage(fs, dtype=jnp.float32) -> AutoencoderKL | VQModel:
  """The autoencoder of config.first_stage; ``dtype``: its computation dtype (parameters fp32)."""
  common = dict(dtype=dtype, embed_dim=fs.embed_dim, ch=fs.ch, ch_mult=tuple(fs.ch_mult),
                num_res_blocks=fs.num_res_blocks, attn_resolutions=tuple(fs.attn_resolutions),
                resolution=fs.resolution, in_channels=fs.in_channels, out_ch=fs.out_ch,
                z_channels=fs.z_channels, attn_type=fs.attn_type, dropout=fs.dropout)
  if fs.kind == 'kl':
    return AutoencoderKL(**common)
  if fs.kind == 'vq':
    return VQModel(n_embed=fs.n_embed, beta=fs.beta, **common)
  raise ValueError(f"config.first_stage.kind must be 'kl' or 'vq', got {fs.kind!r}")


def build_discriminator(config) -> NLayerDiscriminator | None:
  """The first stage's PatchGAN, or None when config.first_stage_loss.use_discriminator is off."""
  L = config.first_stage_loss
  if not L.use_discriminator:
    return None
  return NLayerDiscriminator(input_nc=L.disc_in_channels, ndf=L.disc_ndf,
                             n_layers=L.disc_num_layers, use_actnorm=L.use_actnorm)


def build_unet(config, dtype=jnp.float32, remat: str = '') -> UNetModel:
  """The UNet of config.unet; ``dtype`` (computation, parameters stay fp32) and ``remat`` are
  training choices (config.training.compute_dtype / remat) that leave the parameters as they are."""
  u = config.unet
  latent = config.first_stage.embed_dim
  return UNetModel(
      in_channels=u.in_channels or latent, model_channels=u.model_channels,
      out_channels=u.out_channels or latent,
      num_res_blocks=u.num_res_blocks, attention_resolutions=tuple(u.attention_resolutions),
      dropout=u.dropout, channel_mult=tuple(u.channel_mult), conv_resample=u.conv_resample,
      num_classes=u.num_classes, num_heads=u.num_heads, num_head_channels=u.num_head_channels,
      use_scale_shift_norm=u.use_scale_shift_norm, resblock_updown=u.resblock_updown,
      use_spatial_transformer=u.use_spatial_transformer, transformer_depth=u.transformer_depth,
      context_dim=u.context_dim, legacy=u.legacy, dtype=dtype, remat=remat)


def build_cond_stage(config):
  """The conditioning encoder with trainable/loadable parameters, or None ('none', 'identity'; and
  'first_stage', which reuses the first stage's parameters)."""
  cs = config.cond_stage
  if cs.kind in ('none', 'identity', 'first_stage'):
    return None
  if cs.kind == 'class':
    return ClassEmbedder(embed_dim=cs.embed_dim, n_classes=cs.n_classes)
  if cs.kind == 'bert':
    return BERTEmbedder(n_embed=cs.embed_dim, n_layer=cs.n_layer, vocab_size=cs.vocab_size,
                        max_seq_len=cs.max_seq_len)
  if cs.kind == 'rescaler':
    return SpatialRescaler(n_stages=cs.n_stages, multiplier=cs.multiplier,
                           in_channels=cs.in_channels, out_channels=cs.out_channels or None,
                           bias=cs.bias)
  raise ValueError(f'config.cond_stage.kind must be one of {COND_KINDS}, got {cs.kind!r}')


def cond_stage_example_input(config, batch: int = 1):
  """A zero input of the conditioning encoder's shape (for init and shape inference)."""
  cs = config.cond_stage
  if cs.kind == 'class':
    return jnp.zeros((batch,), jnp.int32)
  if cs.kind == 'bert':
    return jnp.zeros((batch, cs.max_seq_len), jnp.int32)
  if cs.kind == 'rescaler':
    s = config.data.image_size
    return jnp.zeros((batch, s, s, cs.in_channels), jnp.float32)
  raise ValueError(f'cond_stage.kind {cs.kind!r} has no encoder input')


def abstract_params(config, with_ldm: bool = True) -> dict:
  """Parameter shapes (ShapeDtypeStructs, nothing allocated) of a config's models:
  {'first_stage', 'unet', 'cond_stage'}; 'unet'/'cond_stage' are None for autoencoder configs
  (or ``with_ldm=False``), 'cond_stage' is None for kinds without parameters."""
  key = jax.random.PRNGKey(0)
  shapes = lambda module, *args: jax.eval_shape(lambda k: module.init(k, *args), key)['params']
  s = config.first_stage.resolution
  out = {'first_stage': shapes(build_first_stage(config.first_stage), jnp.zeros((1, s, s, 3))),
         'unet': None, 'cond_stage': None}
  if config.stage != 'ldm' or not with_ldm:
    return out
  cond = build_cond_stage(config)
  if cond is not None:
    out['cond_stage'] = shapes(cond, cond_stage_example_input(config))
  context = None
  if conditioning_key(config) in ('crossattn', 'hybrid'):
    context = jnp.zeros((1, 1, config.unet.context_dim))
  h, w, _ = latent_shape(config)
  x = jnp.zeros((1, h, w, config.unet.in_channels or config.first_stage.embed_dim))
  out['unet'] = shapes(build_unet(config), x, jnp.zeros((1,), jnp.int32), context)
  return out


def build_schedule(config) -> Schedule:
  d = config.diffusion
  return make_schedule(d.beta_schedule, d.timesteps, d.linear_start, d.linear_end, d.cosine_s,
                       parameterization=d.parameterization)


def latent_shape(config) -> tuple[int, int, int]:
  size = config.data.image_size // downsampling_factor(config)
  return (size, size, config.first_stage.embed_dim)


def first_stage_latents(first_stage, first_stage_params, images, key=None):
  """Unscaled latents: a KL posterior sample (its mode if key is None) or VQ pre-quant latents."""
  out = first_stage.apply({'params': first_stage_params}, images, method='encode')
  if isinstance(first_stage, AutoencoderKL):
    return out.mode() if key is None else out.sample(key)
  return out


def resize_nearest_torch(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """torch.nn.functional.interpolate(mode='nearest') on NHWC: source index floor(i * in / out)."""
  idx = lambda n_in, n_out: jnp.minimum(
      jnp.floor(jnp.arange(n_out) * (n_in / n_out)).astype(jnp.int32), n_in - 1)
  return x[:, idx(x.shape[1], size[0])][:, :, idx(x.shape[2], size[1])]


Conditioning = dict  # {'concat': [B, h, w, c], 'crossattn': [B, L, D]}, either key optional


@dataclasses.dataclass(frozen=True)
class LatentDiffusion:
  """First stage + UNet + conditioning encoder + schedule (reference: LatentDiffusion and
  DiffusionWrapper in ddpm.py).

  The raw condition ``cond`` of each ``cond_kind`` (what a data batch or a user provides):
  class -> int labels [B]; bert -> token ids [B, L]; rescaler -> a map [B, H, W, C] (one-hot
  segmentation) or a class map int [B, H, W] (one-hot inside); first_stage -> {'masked_image':
  [B, H, W, 3] in [-1, 1], 'mask': [B, H, W, 1] in {-1, 1}, 1 = to fill} (inpainting); identity -> the conditioning itself ([B, h, w, c] for concat,
  [B, L, D] for cross-attention, a dict of both for hybrid). ``conditioning`` turns it into what the
  UNet consumes (``Conditioning``), once per sample; ``eps`` then takes that.
  """
  first_stage: Any
  unet: UNetModel
  cond_stage: Any  # a conditioning encoder (ClassEmbedder, BERTEmbedder, SpatialRescaler) or None
  schedule: Schedule
  parameterization: str = 'eps'
  cond_kind: str = 'none'
  conditioning_key: str = ''  # '', 'crossattn', 'concat' or 'hybrid'
  cond_example_shape: tuple = ()  # the cond stage's input shape for init (batch 1)
  cond_example_dtype: Any = jnp.int32

  @classmethod
  def from_config(cls, config, compute_dtype: str = 'float32',
                  remat: str = '') -> 'LatentDiffusion':
    """``compute_dtype`` ('bfloat16': first stage and UNet compute in bf16 on fp32 parameters)
    and ``remat`` (the UNet's, see UNetModel.remat): the trainer passes config.training's."""
    cond = build_cond_stage(config)
    example = cond_stage_example_input(config) if cond is not None else None
    dtype = jnp.dtype(compute_dtype)
    return cls(build_first_stage(config.first_stage, dtype), build_unet(config, dtype, remat), cond,
               build_schedule(config), config.diffusion.parameterization, config.cond_stage.kind,
               conditioning_key(config), example.shape if example is not None else (),
               example.dtype if example is not None else jnp.int32)

  # -- first stage -------------------------------------------------------------------------
  def encode(self, first_stage_params, images, key=None):
    """Unscaled latents: a KL posterior sample (its mode if key is None) or VQ pre-quant latents."""
    return first_stage_latents(self.first_stage, first_stage_params, images, key)

  def encode_moments(self, first_stage_params, images):
    """What a latent cache stores: KL -> concat(mean, logvar) (sampled per step); VQ -> latents."""
    out = self.first_stage.apply({'params': first_stage_params}, images, method='encode')
    if isinstance(self.first_stage, AutoencoderKL):
      return jnp.concatenate([out.mean, out.logvar], axis=-1)
    return out

  def latents_from_batch(self, first_stage_params, batch, key=None, noise=None):
    """Unscaled fp32 latents of a batch of images, or of cached moments: KL -> a posterior sample
    (``noise``: its standard normal draw, else drawn from ``key``); VQ -> pre-quant latents."""
    moments = batch['moments'] if 'moments' in batch else self.encode_moments(
        first_stage_params, batch['image'])
    moments = moments.astype(jnp.float32)
    if not isinstance(self.first_stage, AutoencoderKL):
      return moments
    posterior = DiagonalGaussian.from_moments(moments)
    if noise is None:
      noise = jax.random.normal(key, posterior.mean.shape)
    return posterior.mean + posterior.std * noise

  def decode(self, first_stage_params, latents, scale_factor):
    """Images in [-1, 1] (not clipped) from scaled latents; VQ latents are quantised first."""
    z = latents / scale_factor
    return self.first_stage.apply({'params': first_stage_params}, z, method='decode')

  # -- conditioning ------------------------------------------------------------------------
  def init_params(self, key, latent_hw_c, batch: int = 1) -> dict:
    """Fresh trainable parameters {'unet', 'cond_stage' (if the kind has parameters)}."""
    k_unet, k_cond = jax.random.split(key)
    h, w, _ = latent_hw_c
    x = jnp.zeros((batch, h, w, self.unet.in_channels), jnp.float32)
    t = jnp.zeros((batch,), jnp.int32)
    params = {}
    if self.cond_stage is not None:
      example = jnp.zeros((batch,) + tuple(self.cond_example_shape[1:]), self.cond_example_dtype)
      params['cond_stage'] = self.cond_stage.init(k_cond, example)['params']
    context = None
    if self.unet.context_dim:
      context = jnp.zeros((batch, 1, self.unet.context_dim), jnp.float32)
    params['unet'] = self.unet.init(k_unet, x, t, context)['params']
    return params

  def conditioning(self, params, first_stage_params, cond) -> Conditioning:
    """The UNet's conditioning from the raw condition (see the class docstring); {} when
    unconditional. The reference's get_learned_conditioning, plus the inpainting script's mask."""
    kind = self.cond_kind
    if kind == 'none':
      return {}
    if cond is None:
      raise ValueError(f'this model is conditioned ({kind}) and needs a condition')
    if kind == 'rescaler' and jnp.issubdtype(jnp.asarray(cond).dtype, jnp.integer):
      # a class map [B, H, W] (training batches): one-hot here, on the device
      cond = jax.nn.one_hot(cond, self.cond_example_shape[-1], dtype=jnp.float32)
    if self.cond_stage is not None:
      c = self.cond_stage.apply({'params': params['cond_stage']}, cond)
    elif kind == 'first_stage':
      # scripts/inpaint.py: the first stage's encoding of the masked image (VQ: pre-quantisation;
      # KL: the posterior mode), then the mask resized (nearest) to the latent size.
      z = self.encode(first_stage_params, cond['masked_image'])
      mask = resize_nearest_torch(cond['mask'].astype(z.dtype), z.shape[1:3])
      c = jnp.concatenate([z, mask], axis=-1)
    else:  # identity
      c = cond
    if self.conditioning_key == 'hybrid':
      if not isinstance(c, dict) or set(c) != {'concat', 'crossattn'}:
        raise ValueError("hybrid conditioning needs a condition {'concat': ..., 'crossattn': ...}")
      return dict(c)
    return {'concat' if self.conditioning_key == 'concat' else 'crossattn': c}

  # -- denoiser ----------------------------------------------------------------------------
  def model_output(self, params, x, t, c: Conditioning | None = None, dropout_key=None):
    """Raw UNet output (eps or x0 by parameterisation) for the conditioning ``c``
    (DiffusionWrapper: concat joins the channels, crossattn is the context)."""
    c = c or {}
    if 'concat' in c:
      x = jnp.concatenate([x, c['concat'].astype(x.dtype)], axis=-1)
    rngs = {'dropout': dropout_key} if dropout_key is not None else {}
    return self.unet.apply({'params': params['unet']}, x, t, c.get('crossattn'),
                           train=dropout_key is not None, rngs=rngs)

  def eps(self, params, x, t, c: Conditioning | None = None, dropout_key=None):
    """The model's noise prediction at (x_t, t) given the conditioning (None: unconditional)."""
    out = self.model_output(params, x, t, c, dropout_key)
    return model_output_to_eps(self.schedule, self.parameterization, x, t, out)
