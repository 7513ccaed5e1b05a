"""Stable Diffusion 2.x 768-v (v2-inference-v.yaml; 768-v-ema weights, 2.0 and 2.1): 768 px, v prediction. UNet 865.91M, OpenCLIP ViT-H/14 text 354.03M.
Shared settings: configs/released/stable_diffusion.py.

  python -m ldm_jax.convert compvis --ckpt=MODEL.ckpt --config=configs/released/sd_v2_768_v.py --out=runs/sd_v2_768_v
  python sample.py --workdir=runs/sd_v2_768_v --prompt="a photograph of an astronaut riding a horse"
  python train.py --config=configs/released/sd_v2_768_v.py --workdir=runs/sd_v2_768_v \
      --config.data.path=DIR   # fine-tune the converted weights on images with .txt captions
"""

from ldm_jax.configs.released.stable_diffusion import sd_config


def get_config():
  return sd_config(2, 768, 'v')
