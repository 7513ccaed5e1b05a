"""LDM-4 4x super-resolution on ImageNet with SR3's bicubic degradation (paper Table 5: FID 2.8,
PSNR 24.4 with 100 DDIM steps, 169M parameters): the bsr_sr architecture (UNet 113.62M on the
vq-f4 latent, the 64x64 low-resolution image concatenated) trained on 256x256 ImageNet crops
whose input is the bicubic 4x downscale.

  python train.py --config=configs/sr_imagenet_bicubic.py --workdir=runs/sr_imagenet \
      --config.first_stage.checkpoint=runs/vq_f4
  python sample.py --workdir=runs/sr_imagenet --lr_image=lr.png --steps=100

Data: TFDS imagenet2012 (manual download) or --config.data.source=folder --config.data.path=DIR.
"""

from ldm_jax.configs.released import bsr_sr


def get_config():
  c = bsr_sr.get_config()
  c.data.update(dict(source='tfds', name='imagenet2012', degradation='bicubic'))
  c.sampling.update(dict(steps=100, eta=1.0))
  return c
