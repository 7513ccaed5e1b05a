"""LDM-VQ-4 semantic synthesis 256 (models/ldm/semantic_synthesis256): landscapes from 182-class
segmentation maps, UNet 215.23M (see configs/released/ldm.py semantic_synthesis).

  python -m ldm_jax.summary --config=configs/released/semantic_synthesis256.py

On a TPU v5e-8 (BENCHMARKS.md "Full compiles": XLA cost-model estimates, not measurements) the fp32
step at the published batch 32, data-parallel, needs 5.74 GiB per chip of 16 and fits (est. 0.102
s/step).
"""

from ldm_jax.configs.released.ldm import semantic_synthesis


def get_config():
  return semantic_synthesis(256, 32)
