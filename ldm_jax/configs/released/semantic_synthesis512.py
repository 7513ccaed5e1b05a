"""LDM-VQ-4 semantic synthesis 512 (models/ldm/semantic_synthesis512): the 256 model fine-tuned at
512 px (128x128x3 latents; same weights shape), batch 8; runs convolutionally on larger canvases.

  python -m ldm_jax.summary --config=configs/released/semantic_synthesis512.py
"""

from ldm_jax.configs.released.ldm import semantic_synthesis


def get_config():
  return semantic_synthesis(512, 8)
