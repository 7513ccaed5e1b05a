"""Stable Diffusion 1.x inpainting (v1-inpainting-inference.yaml; sd-v1-5-inpainting weights): 512
px, eps prediction, the text-guided inpainting task (ldm_jax/tasks/text_inpainting.py): the UNet
takes 9 channels, [x, mask, masked-image latent], and cross-attends to CLIP ViT-L/14's text. UNet
859.54M, CLIP text 123.06M. Shared settings: configs/released/stable_diffusion.py.

  python -m ldm_jax.convert compvis --ckpt=sd-v1-5-inpainting.ckpt \
      --config=configs/released/sd_v1_inpainting.py --out=runs/sd_v1_inpainting
  python sample.py --workdir=runs/sd_v1_inpainting --prompt="a red sofa" --image=room.png \
      --mask=room_mask.png   # white = the region to paint
"""

from ldm_jax.configs.released.stable_diffusion import sd_config


def get_config():
  c = sd_config(1, 512, 'eps', in_channels=9)
  c.task = 'text_inpainting'
  c.cond_stage.conditioning_key = 'hybrid'
  return c
