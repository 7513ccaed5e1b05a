"""Stable Diffusion 2.x base (v2-inference.yaml; 512-base-ema weights, 2.0 and 2.1): 512 px, eps prediction. UNet 865.91M, OpenCLIP ViT-H/14 text 354.03M (24 layers kept, the 24th unused).
Shared settings: configs/released/stable_diffusion.py.

  python -m ldm_jax.convert compvis --ckpt=MODEL.ckpt --config=configs/released/sd_v2_base.py --out=runs/sd_v2_base
  python sample.py --workdir=runs/sd_v2_base --prompt="a photograph of an astronaut riding a horse"
  python train.py --config=configs/released/sd_v2_base.py --workdir=runs/sd_v2_base \
      --config.data.path=DIR   # fine-tune the converted weights on images with .txt captions
"""

from ldm_jax.configs.released.stable_diffusion import sd_config


def get_config():
  return sd_config(2, 512, 'eps')
