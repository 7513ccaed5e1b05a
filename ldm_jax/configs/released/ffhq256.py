"""LDM-VQ-4 on FFHQ 256 (models/ldm/ffhq256 = configs/latent-diffusion/ffhq-ldm-vq-4):
unconditional, UNet 274.06M, batch 42, lr 2e-6 x batch. Paper: FID 4.98 (Table 1).

  python train.py --config=configs/released/ffhq256.py --workdir=runs/ffhq256 \
      --config.data.path=/data/ffhq256
"""

from ldm_jax.configs.released.ldm import vq4_unconditional


def get_config():
  return vq4_unconditional(42, dict(source='folder'))
