"""SDXL 1.0 refiner (sd_xl_refiner.yaml; sd_xl_refiner_1.0.safetensors): 1024 px, eps prediction,
conditioned on the aesthetic score. UNet 2,259,526,660 parameters, OpenCLIP ViT-bigG/14 text
694,659,840 with its projection (+ logit_scale), autoencoder 83,653,863. Shared settings:
configs/released/sdxl.py.

  python -m ldm_jax.convert compvis --ckpt=sd_xl_refiner_1.0.safetensors --config=configs/released/sdxl_refiner.py --out=runs/sdxl_refiner
  python sample.py --workdir=runs/sdxl_refiner --prompt="an astronaut riding a horse" --init_image=base.png --strength=0.3
"""

from ldm_jax.configs.released.sdxl import sdxl_config


def get_config():
  return sdxl_config(refiner=True)
