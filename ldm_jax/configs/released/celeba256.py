"""LDM-VQ-4 on CelebA-HQ 256 (models/ldm/celeba256 = configs/latent-diffusion/celebahq-ldm-vq-4):
unconditional, UNet 274.06M, batch 48, lr 2e-6 x batch. Paper: FID 5.11 (Table 1).

  python train.py --config=configs/released/celeba256.py --workdir=runs/celeba256 \
      --config.data.path=/data/celebahq256
"""

from ldm_jax.configs.released.ldm import vq4_unconditional


def get_config():
  return vq4_unconditional(48, dict(source='folder'))
