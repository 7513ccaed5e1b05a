"""SDXL 1.0 base (sd_xl_base.yaml; sd_xl_base_1.0.safetensors): 1024 px, eps prediction. UNet
2,567,463,684 parameters, CLIP ViT-L/14 text 123,060,480, OpenCLIP ViT-bigG/14 text 694,659,840 with
its projection (+ logit_scale), autoencoder 83,653,863. Shared settings: configs/released/sdxl.py.

  python -m ldm_jax.convert compvis --ckpt=sd_xl_base_1.0.safetensors --config=configs/released/sdxl_base.py --out=runs/sdxl_base
  python -m ldm_jax.convert diffusers --path=stabilityai/stable-diffusion-xl-base-1.0 --out=runs/sdxl_base
  python sample.py --workdir=runs/sdxl_base --prompt="an astronaut riding a horse"
"""

from ldm_jax.configs.released.sdxl import sdxl_config


def get_config():
  return sdxl_config(refiner=False)
