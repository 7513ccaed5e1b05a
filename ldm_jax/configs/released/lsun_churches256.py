"""LDM-KL-8 on LSUN-Churches 256 (models/ldm/lsun_churches256 = configs/latent-diffusion/
lsun_churches-ldm-kl-8): the same config as configs/lsun_churches.py (see there)."""

from ldm_jax.configs import lsun_churches


def get_config():
  return lsun_churches.get_config()
