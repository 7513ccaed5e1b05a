"""Shared builder for the nine released first-stage autoencoders (models/first_stage_models/*/
config.yaml in CompVis/latent-diffusion): architecture, loss settings and optimisation exactly as
the yaml files, one call per model in the files next to this one.

Common to all nine: ch 128, num_res_blocks 2, resolution 256, dropout 0; Adam(0.5, 0.9) for the
autoencoder and the discriminator; lr = 4.5e-6 x global batch (the reference's --scale_lr: batch x
GPUs x accumulation); LPIPS weight 1; BatchNorm PatchGAN with ndf 64; hinge loss.

Data: the reference trained on OpenImages (FullOpenImages, resized to 384 then cropped to 256, a
module it never published). Defaults here read TFDS `open_images_v4` (prepare with
`tfds build open_images_v4`; ~570 GB), centre-cropped and resized to 256. Alternatives:
  --config.data.name=imagenet2012                      (TFDS, manual download)
  --config.data.source=folder --config.data.path=DIR   (any folder of images)
Reference results (paper Table 8, ImageNet val) are in each file's docstring; evaluate with
  python -m ldm_jax.eval.reconstruction --workdir=WORKDIR --split=validation
"""

from ldm_jax.config import base_config


def first_stage_config(
  kind: str,
  embed_dim: int,
  ch_mult,
  attn_resolutions=(),
  n_embed: int = 0,
  attn_type: str = 'vanilla',
  disc_start: int = 50001,
  disc_weight: float = 0.5,
  disc_num_layers: int = 3,
  batch_size: int = 8,
  num_steps: int = 500_000,
):
  c = base_config()
  c.stage = 'autoencoder'
  c.data.update(
    dict(source='tfds', name='open_images_v4', split='train', image_size=256, random_flip=False)
  )
  c.first_stage.update(
    dict(
      kind=kind,
      embed_dim=embed_dim,
      z_channels=embed_dim,
      ch=128,
      ch_mult=tuple(ch_mult),
      num_res_blocks=2,
      attn_resolutions=tuple(attn_resolutions),
      resolution=256,
      attn_type=attn_type,
      dropout=0.0,
      n_embed=n_embed,
    )
  )
  c.first_stage_loss.update(
    dict(
      kl_weight=1e-6,
      codebook_weight=1.0,
      perceptual_weight=1.0,
      use_discriminator=True,
      disc_start=disc_start,
      disc_weight=disc_weight,
      disc_factor=1.0,
      disc_loss='hinge',
      disc_num_layers=disc_num_layers,
      disc_ndf=64,
      disc_in_channels=3,
      use_actnorm=False,
    )
  )
  c.optimizer.update(
    dict(name='adam', base_learning_rate=4.5e-6, scale_lr=True, b1=0.5, b2=0.9, weight_decay=0.0)
  )
  c.training.update(
    dict(
      batch_size=batch_size,
      num_steps=num_steps,
      log_every=100,
      checkpoint_every=5000,
      sample_every=2000,
      use_ema=False,
      num_sample_images=8,
    )
  )
  return c
