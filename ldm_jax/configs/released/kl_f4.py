"""KL f=4, 64x64x3 latents: the reference's models/first_stage_models/kl-f4/config.yaml.

  python train.py --config=configs/released/kl_f4.py --workdir=runs/kl_f4

Hardware: GPUs or a TPU slice (256x256 images; the reference used batch 10 per GPU).
Target (paper Table 8, ImageNet val, 256 px): rFID 0.27, PSNR 27.53, PSIM 0.55. See
configs/released/first_stage.py for the data and the settings shared by all nine.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.first_stage import first_stage_config


def get_config():
  return first_stage_config(kind='kl', embed_dim=3, ch_mult=(1, 2, 4), batch_size=10)
