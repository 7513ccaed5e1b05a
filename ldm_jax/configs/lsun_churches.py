"""LDM-KL-8 on LSUN-Churches 256x256: the reference's configs/latent-diffusion/lsun_churches-ldm-kl-8.yaml
(UNet 294,966,916 parameters on 32x32x4 latents of the kl-f8 autoencoder; paper Table 12).

  python train.py --config=configs/lsun_churches.py --workdir=runs/churches \
      --config.first_stage.checkpoint=runs/kl_f8

Hardware: the paper trained on one A100 for 500k steps at batch 96 (Table 12, 18 V100-days). Target:
FID 4.02 (50k samples, DDIM; README: 400 DDIM steps, eta 0). Data: TFDS lsun/church_outdoor.
lr 5e-5 unscaled (the yaml says start main.py with --scale_lr False), AdamW(wd 0.01), L1 loss,
betas sqrt-linear 0.0015 -> 0.0155, scale_by_std, EMA 0.9999.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("TPU pod slices")."""

from ldm_jax.config import base_config
from ldm_jax.configs.released import kl_f8


def get_config():
  c = base_config()
  c.stage = 'ldm'
  c.data.update(
    dict(source='tfds', name='lsun/church_outdoor', split='train', image_size=256, random_flip=True)
  )
  c.first_stage = kl_f8.get_config().first_stage  # the released kl-f8 autoencoder
  c.first_stage.checkpoint = 'runs/kl_f8'
  c.unet.update(
    dict(
      model_channels=192,
      channel_mult=(1, 2, 2, 4, 4),
      num_res_blocks=2,
      attention_resolutions=(1, 2, 4, 8),
      num_heads=8,
      use_scale_shift_norm=True,
      resblock_updown=True,
    )
  )
  c.task = 'unconditional'
  c.cond_stage.kind = 'none'
  c.diffusion.update(
    dict(
      timesteps=1000,
      beta_schedule='linear',
      linear_start=0.0015,
      linear_end=0.0155,
      loss_type='l1',
      parameterization='eps',
      scale_by_std=True,
    )
  )
  c.optimizer.update(dict(name='adamw', base_learning_rate=5e-5, scale_lr=False, weight_decay=0.01))
  c.training.update(
    dict(
      batch_size=96,
      num_steps=500_000,
      log_every=100,
      checkpoint_every=5000,
      sample_every=5000,
      use_ema=True,
      ema_decay=0.9999,
      num_sample_images=8,
    )
  )
  c.sampling.update(dict(sampler='ddim', steps=200, eta=0.0))
  return c
