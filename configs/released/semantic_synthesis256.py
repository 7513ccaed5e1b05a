"""LDM-VQ-4 semantic synthesis 256 (models/ldm/semantic_synthesis256): landscapes from 182-class
segmentation maps, UNet 215.23M (see configs/released/ldm.py semantic_synthesis).

  python -m ldm_jax.summary --config=configs/released/semantic_synthesis256.py
"""

from configs.released.ldm import semantic_synthesis


def get_config():
  return semantic_synthesis(256, 32)
