"""Build the models of a config with plain Python, and glue them into a latent diffusion model.

``LatentDiffusion`` is a frozen dataclass of three linen modules (first stage, UNet, optional
conditioning encoder), a schedule and the task (``ldm_jax.tasks``); its methods are pure
functions of explicit parameter pytrees: ``params = {'unet': ..., 'cond_stage': ...}``
(trainable) and ``first_stage_params`` (frozen). It owns the latent scaling in both directions:
``latents`` multiplies by ``scale_factor``, ``decode`` divides by it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ldm_jax.config import UNetConfig, downsampling_factor
from ldm_jax.diffusion.gaussian import model_output_to_eps
from ldm_jax.diffusion.schedule import Schedule, make_schedule
from ldm_jax.nn.autoencoder import AutoencoderKL, VQModel
from ldm_jax.nn.discriminator import NLayerDiscriminator
from ldm_jax.nn.distributions import DiagonalGaussian
from ldm_jax.nn.unet import UNetModel
from ldm_jax.tasks import Task, get_task


def build_first_stage(fs, dtype=jnp.float32) -> AutoencoderKL | VQModel:
  """The autoencoder of config.first_stage; ``dtype``: its computation dtype (parameters fp32)."""
  common = dict(
    dtype=dtype,
    embed_dim=fs.embed_dim,
    ch=fs.ch,
    ch_mult=tuple(fs.ch_mult),
    num_res_blocks=fs.num_res_blocks,
    attn_resolutions=tuple(fs.attn_resolutions),
    resolution=fs.resolution,
    in_channels=fs.in_channels,
    out_ch=fs.out_ch,
    z_channels=fs.z_channels,
    attn_type=fs.attn_type,
    dropout=fs.dropout,
  )
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
  return NLayerDiscriminator(
    input_nc=L.disc_in_channels,
    ndf=L.disc_ndf,
    n_layers=L.disc_num_layers,
    use_actnorm=L.use_actnorm,
  )


def build_unet(config, dtype=jnp.float32, remat: str = '') -> UNetModel:
  """The UNet of config.unet; ``dtype`` (computation, parameters stay fp32) and ``remat`` are
  training choices (config.training.compute_dtype / remat) that leave the parameters as they are."""
  return UNetModel(UNetConfig.from_config(config), dtype=dtype, remat=remat)


def init_first_stage(config, key, dtype=jnp.float32):
  """Fresh parameters of config.first_stage (``jax.eval_shape`` it for shapes alone)."""
  s = config.first_stage.resolution
  return build_first_stage(config.first_stage, dtype).init(key, jnp.zeros((1, s, s, 3)))['params']


def first_stage_shapes(config):
  """The first stage's parameter shapes (ShapeDtypeStructs, nothing allocated)."""
  return jax.eval_shape(lambda k: init_first_stage(config, k), jax.random.PRNGKey(0))


def abstract_params(config, with_ldm: bool = True) -> dict:
  """Parameter shapes (ShapeDtypeStructs, nothing allocated) of a config's models:
  {'first_stage', 'unet', 'cond_stage'}; 'unet'/'cond_stage' are None for autoencoder configs
  (or ``with_ldm=False``), 'cond_stage' is None for tasks without encoder parameters."""
  out = {'first_stage': first_stage_shapes(config), 'unet': None, 'cond_stage': None}
  if config.stage != 'ldm' or not with_ldm:
    return out
  ldm, shape = LatentDiffusion.from_config(config), latent_shape(config)
  shapes = jax.eval_shape(lambda k: ldm.init_params(k, shape), jax.random.PRNGKey(0))
  out.update(shapes)
  return out


def build_schedule(config) -> Schedule:
  d = config.diffusion
  return make_schedule(
    d.beta_schedule,
    d.timesteps,
    d.linear_start,
    d.linear_end,
    d.cosine_s,
    parameterization=d.parameterization,
    zero_terminal_snr=d.get('rescale_zero_terminal_snr', False),
  )


def latent_shape(config, image_hw=None) -> tuple[int, int, int]:
  """(h, w, c) of the latents of an image of ``image_hw`` (default: the config's square)."""
  f = downsampling_factor(config)
  h, w = image_hw if image_hw is not None else (config.data.image_size,) * 2
  return (h // f, w // f, config.first_stage.embed_dim)


# {'concat': [B, h, w, c], 'crossattn': [B, L, D], 'crossattn_mask': [B, L] bool, 'vector':
# [B, adm_in_channels] (SDXL's y)}, all optional
Conditioning = dict


@dataclasses.dataclass(frozen=True)
class LatentDiffusion:
  """First stage + UNet + conditioning encoder + schedule (reference: LatentDiffusion and
  DiffusionWrapper in ddpm.py), for one task.

  ``cond`` is the task's raw condition (what a data batch or a user provides; each module of
  ``ldm_jax.tasks`` documents its own). ``conditioning`` turns it into what the UNet consumes
  (``Conditioning``), once per sample; ``eps`` then takes that.
  """

  first_stage: Any
  unet: UNetModel
  cond_stage: Any  # the task's conditioning encoder (ClassEmbedder, BERTEmbedder, ...) or None
  schedule: Schedule
  task: Task
  parameterization: str = 'eps'

  @classmethod
  def from_config(
    cls, config, compute_dtype: str = 'float32', remat: str = ''
  ) -> 'LatentDiffusion':
    """``compute_dtype`` ('bfloat16': first stage and UNet compute in bf16 on fp32 parameters)
    and ``remat`` (the UNet's, see UNetModel.remat): the trainer passes config.training's."""
    task = get_task(config)
    dtype = jnp.dtype(compute_dtype)
    return cls(
      build_first_stage(config.first_stage, dtype),
      build_unet(config, dtype, remat),
      task.build_encoder(),
      build_schedule(config),
      task,
      config.diffusion.parameterization,
    )

  def for_sampling(self) -> LatentDiffusion:
    """This model with ``Schedule.for_sampling`` (a zero terminal SNR made finite, as diffusers'
    samplers do), for the samplers and the output-to-eps conversion they read."""
    schedule = self.schedule.for_sampling()
    return self if schedule is self.schedule else dataclasses.replace(self, schedule=schedule)

  @property
  def conditioning_key(self) -> str:
    """'' (unconditional), 'crossattn', 'concat' or 'hybrid'."""
    return self.task.conditioning_key

  @property
  def guidable(self) -> bool:
    """Classifier-free guidance applies: by default where the condition enters through
    cross-attention alone; text inpainting drops only its prompt."""
    return bool(self.task.guidable)

  # -- first stage -------------------------------------------------------------------------
  def encode(self, first_stage_params, images, key=None):
    """Unscaled latents: a KL posterior sample (its mode if key is None) or VQ pre-quant latents."""
    out = self.first_stage.apply({'params': first_stage_params}, images, method='encode')
    if isinstance(self.first_stage, AutoencoderKL):
      return out.mode() if key is None else out.sample(key)
    return out

  def latents(self, first_stage_params, images, scale_factor, key=None):
    """The diffusion model's latents of images in [-1, 1]: ``encode`` times ``scale_factor``."""
    return self.encode(first_stage_params, images, key) * scale_factor

  def encode_moments(self, first_stage_params, images):
    """What a latent cache stores: KL -> concat(mean, logvar) (sampled per step); VQ -> latents."""
    out = self.first_stage.apply({'params': first_stage_params}, images, method='encode')
    if isinstance(self.first_stage, AutoencoderKL):
      return jnp.concatenate([out.mean, out.logvar], axis=-1)
    return out

  def latents_from_batch(self, first_stage_params, batch, key=None, noise=None, scale_factor=1.0):
    """fp32 latents (times ``scale_factor``) of a batch of images, or of cached moments: KL -> a
    posterior sample (``noise``: its standard normal draw, else drawn from ``key``); VQ ->
    pre-quant latents."""
    moments = (
      batch['moments']
      if 'moments' in batch
      else self.encode_moments(first_stage_params, batch['image'])
    )
    moments = moments.astype(jnp.float32)
    if not isinstance(self.first_stage, AutoencoderKL):
      return moments * scale_factor
    posterior = DiagonalGaussian.from_moments(moments)
    if noise is None:
      noise = jax.random.normal(key, posterior.mean.shape)
    return (posterior.mean + posterior.std * noise) * scale_factor

  def decode(self, first_stage_params, latents, scale_factor):
    """Images in [-1, 1] (not clipped) from scaled latents; VQ latents are quantised first."""
    z = latents / scale_factor
    return self.first_stage.apply({'params': first_stage_params}, z, method='decode')

  # -- conditioning ------------------------------------------------------------------------
  def init_params(self, key, latent_hw_c, batch: int = 1) -> dict:
    """Fresh trainable parameters {'unet', 'cond_stage' (if the task's encoder has any)}."""
    k_unet, k_cond = jax.random.split(key)
    h, w, _ = latent_hw_c
    x = jnp.zeros((batch, h, w, self.unet.config.in_channels), jnp.float32)
    t = jnp.zeros((batch,), jnp.int32)
    params = {}
    if self.cond_stage is not None:
      example = jnp.asarray(self.task.encoder_input(batch))
      params['cond_stage'] = self.cond_stage.init(k_cond, example)['params']
    context = None
    if self.unet.config.context_dim:
      context = jnp.zeros((batch, 1, self.unet.config.context_dim), jnp.float32)
    y = None
    if self.unet.config.adm_in_channels:
      y = jnp.zeros((batch, self.unet.config.adm_in_channels), jnp.float32)
    params['unet'] = self.unet.init(k_unet, x, t, context, y)['params']
    return params

  def conditioning(self, params, first_stage_params, cond) -> Conditioning:
    """The UNet's conditioning from the raw condition; {} when unconditional. The reference's
    get_learned_conditioning (the task's ``encode``), placed by the conditioning key."""
    key = self.conditioning_key
    if not key:
      return {}
    if cond is None:
      raise ValueError(f'this model is conditioned ({self.task.name}) and needs a condition')
    c = self.task.encode(self, params, first_stage_params, cond)
    if isinstance(c, dict) and key == 'crossattn':  # the context and its padding mask
      return dict(c)
    if key == 'hybrid':
      if not isinstance(c, dict) or set(c) != {'concat', 'crossattn'}:
        raise ValueError("hybrid conditioning needs a condition {'concat': ..., 'crossattn': ...}")
      return dict(c)
    return {key: c}

  # -- denoiser ----------------------------------------------------------------------------
  def model_output(self, params, x, t, c: Conditioning | None = None, dropout_key=None):
    """Raw UNet output (eps or x0 by parameterisation) for the conditioning ``c``
    (DiffusionWrapper: concat joins the channels, crossattn is the context)."""
    c = c or {}
    if 'concat' in c:
      x = jnp.concatenate([x, c['concat'].astype(x.dtype)], axis=-1)
    rngs = {'dropout': dropout_key} if dropout_key is not None else {}
    return self.unet.apply(
      {'params': params['unet']},
      x,
      t,
      c.get('crossattn'),
      c.get('vector'),
      train=dropout_key is not None,
      context_mask=c.get('crossattn_mask'),
      rngs=rngs,
    )

  def eps(self, params, x, t, c: Conditioning | None = None, dropout_key=None):
    """The model's noise prediction at (x_t, t) given the conditioning (None: unconditional)."""
    out = self.model_output(params, x, t, c, dropout_key)
    return model_output_to_eps(self.schedule, self.parameterization, x, t, out)
