"""LDM-VQ-4 semantic synthesis 256 (models/ldm/semantic_synthesis256): landscapes from 182-class
segmentation maps, UNet 215.23M (see configs/released/ldm.py semantic_synthesis).

  python -m ldm_jax.summary --config=configs/released/semantic_synthesis256.py

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.ldm import semantic_synthesis


def get_config():
  return semantic_synthesis(256, 32)
