"""LDM-VQ-4 on LSUN-Bedrooms 256 (models/ldm/lsun_beds256 = configs/latent-diffusion/
lsun_bedrooms-ldm-vq-4): unconditional, UNet 274.06M, batch 48, lr 2e-6 x batch. Paper: FID 2.95.

  python train.py --config=configs/released/lsun_beds256.py --workdir=runs/lsun_beds256
"""

from ldm_jax.configs.released.ldm import vq4_unconditional


def get_config():
  return vq4_unconditional(48, dict(source='tfds', name='lsun/bedroom'))
