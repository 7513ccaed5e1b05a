"""Shared builder for the released LDMs (models/ldm/*/config.yaml and configs/latent-diffusion/*.yaml
in CompVis/latent-diffusion): one call per model in the files
next to this one. Common to all: 1000 steps, the reference's 'linear' (sqrt-linear) betas, eps
prediction, num_res_blocks 2, AdamW (torch defaults, wd 0.01), EMA 0.9999 where the yaml has it.
Learning rate: base_learning_rate x global batch (main.py's default scaling), except where a
file says the yaml asks for --scale_lr False.

The task (config.task, ldm_jax/tasks/) follows from the conditioning encoder
(config.cond_stage.kind): class -> ClassEmbedder, cross-attention; bert -> the BERT-style
transformer (text, or layout tokens), cross-attention; rescaler -> SpatialRescaler of a
segmentation map, concatenated (semantic); first_stage -> the masked image's latent (+ mask),
concatenated (inpainting); identity -> the conditioning as given (superres: the low-resolution
image, concatenated; embeddings: RDM's precomputed CLIP embeddings, cross-attention).

These configs build the exact architectures (python -m ldm_jax.summary --config=...) and sample
every task from converted weights (sample.py); the data pipelines of every task except
embeddings train them (configs/digits_tasks.py shows each on the digits).
"""

from ldm_jax.config import base_config
from ldm_jax.configs.released import first_stage as fs_lib
from ldm_jax.tasks import task_name

# The first stage of each LDM, by the name of its released autoencoder (configs/released/<name>.py).
_FIRST_STAGES = {
  'kl_f8': dict(kind='kl', embed_dim=4, ch_mult=(1, 2, 4, 4)),
  'kl_f16': dict(kind='kl', embed_dim=16, ch_mult=(1, 1, 2, 2, 4), attn_resolutions=(16,)),
  'vq_f4': dict(kind='vq', embed_dim=3, n_embed=8192, ch_mult=(1, 2, 4)),
  'vq_f4_noattn': dict(kind='vq', embed_dim=3, n_embed=8192, ch_mult=(1, 2, 4), attn_type='none'),
  'vq_f8': dict(
    kind='vq', embed_dim=4, n_embed=16384, ch_mult=(1, 2, 2, 4), attn_resolutions=(32,)
  ),
}


def ldm_config(
  first_stage: str,
  image_size: int,
  unet: dict,
  cond: dict | None = None,
  *,
  linear_start: float = 0.0015,
  linear_end: float = 0.0195,
  loss_type: str = 'l2',
  base_lr: float,
  scale_lr: bool = True,
  batch_size: int,
  use_ema: bool = True,
  scale_factor: float = 1.0,
  scale_by_std: bool = False,
  data: dict | None = None,
):
  c = base_config()
  c.stage = 'ldm'
  c.data.update(dict(image_size=image_size, random_flip=True, **(data or {})))
  c.first_stage = fs_lib.first_stage_config(**_FIRST_STAGES[first_stage]).first_stage
  c.first_stage.checkpoint = f'runs/{first_stage}'
  c.unet.update(dict(num_res_blocks=2, **unet))
  if cond:
    c.cond_stage.update(cond)
  c.task = task_name(c)
  c.diffusion.update(
    dict(
      timesteps=1000,
      beta_schedule='linear',
      linear_start=linear_start,
      linear_end=linear_end,
      loss_type=loss_type,
      parameterization='eps',
      scale_factor=scale_factor,
      scale_by_std=scale_by_std,
    )
  )
  c.optimizer.update(
    dict(name='adamw', base_learning_rate=base_lr, scale_lr=scale_lr, weight_decay=0.01)
  )
  c.training.update(
    dict(
      batch_size=batch_size,
      num_steps=500_000,
      log_every=100,
      checkpoint_every=5000,
      sample_every=5000,
      use_ema=use_ema,
      ema_decay=0.9999,
      num_sample_images=8,
    )
  )
  c.sampling.update(dict(sampler='ddim', steps=200, eta=0.0))
  return c


# --- shared architectures -----------------------------------------------------------------------
def vq4_unconditional(batch_size: int, data: dict):
  """CelebA-HQ, FFHQ, LSUN-Bedrooms: LDM-VQ-4, UNet 274.06M on 64x64x3 latents."""
  return ldm_config(
    'vq_f4',
    256,
    dict(
      model_channels=224,
      channel_mult=(1, 2, 3, 4),
      attention_resolutions=(8, 4, 2),
      num_head_channels=32,
    ),
    base_lr=2e-6,
    batch_size=batch_size,
    data=data,
  )


def semantic_synthesis(image_size: int, batch_size: int):
  """Landscapes from 182-class segmentation maps (SpatialRescaler 4x down + 1x1 conv to 3 channels,
  concatenated: UNet in 6). attention_resolutions (32, 16, 8) do not exist at ds <= 4, so only the
  middle block attends (as the reference)."""
  return ldm_config(
    'vq_f4',
    image_size,
    dict(
      in_channels=6,
      out_channels=3,
      model_channels=128,
      channel_mult=(1, 4, 8),
      attention_resolutions=(32, 16, 8),
      num_heads=8,
    ),
    dict(kind='rescaler', n_stages=2, multiplier=0.5, in_channels=182, out_channels=3, bias=False),
    linear_end=0.0205,
    loss_type='l1',
    base_lr=1e-6,
    batch_size=batch_size,
    data=dict(source='folder'),
  )
