"""Stable Diffusion 1.x (v1-inference.yaml; v1-1 ... v1-5 weights): 512 px, eps prediction. UNet 859.52M, CLIP ViT-L/14 text 123.06M.
Shared settings: configs/released/stable_diffusion.py.

  python -m ldm_jax.convert compvis --ckpt=MODEL.ckpt --config=configs/released/sd_v1.py --out=runs/sd_v1
  python sample.py --workdir=runs/sd_v1 --prompt="a photograph of an astronaut riding a horse"
  python train.py --config=configs/released/sd_v1.py --workdir=runs/sd_v1 \
      --config.data.path=DIR   # fine-tune the converted weights on images with .txt captions
"""

from ldm_jax.configs.released.stable_diffusion import sd_config


def get_config():
  return sd_config(1, 512, 'eps')
