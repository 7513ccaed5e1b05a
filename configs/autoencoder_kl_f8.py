"""KL-regularised autoencoder, f=8, 32x32x4 latents: the first stage of LDM-KL-8 (LSUN-Churches).
Architecture = the reference's kl-f8 / configs/autoencoder/autoencoder_kl_32x32x4.yaml
(34.16M encoder + 49.49M decoder = 83,653,863 parameters).

  python train.py --config=configs/autoencoder_kl_f8.py --workdir=runs/kl_f8

Hardware: 1+ GPU (A100/H100 class) or a TPU slice; the reference trains 246,803 steps at batch 12 x
accumulate 2 per GPU. Target (paper Table 8, ImageNet-val, with LPIPS + PatchGAN): rFID 0.90,
PSNR 24.19. Data: ImageNet via TFDS (manual download: `tfds build imagenet2012`), or point
--config.data.source=folder --config.data.path=... at any image folder.
Until LPIPS and the discriminator land, this trains L1 + KL only (blurrier than the release).
lr = 4.5e-6 x global batch (the reference's --scale_lr): 1.08e-4 at batch 24.
"""
from ldm_jax.config import base_config


def set_first_stage(fs) -> None:
  fs.update(dict(kind='kl', embed_dim=4, z_channels=4, ch=128, ch_mult=(1, 2, 4, 4),
                 num_res_blocks=2, attn_resolutions=(), resolution=256, attn_type='vanilla',
                 dropout=0.0))


def get_config():
  c = base_config()
  c.stage = 'autoencoder'
  c.data.update(dict(source='tfds', name='imagenet2012', split='train', image_size=256,
                     random_flip=False))
  set_first_stage(c.first_stage)
  c.first_stage_loss.update(dict(kl_weight=1e-6))
  c.optimizer.update(dict(name='adam', base_learning_rate=4.5e-6, scale_lr=True, b1=0.5, b2=0.9,
                          weight_decay=0.0))
  c.training.update(dict(batch_size=24, num_steps=246_803, log_every=100, checkpoint_every=5000,
                         sample_every=1000, use_ema=False, num_sample_images=8))
  return c
