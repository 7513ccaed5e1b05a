"""KL f=8, 32x32x4 latents (first stage of LDM-KL-8, LSUN-Churches, txt2img): the reference's
models/first_stage_models/kl-f8/config.yaml.

  python train.py --config=configs/released/kl_f8.py --workdir=runs/kl_f8

Hardware: GPUs or a TPU slice (256x256 images; the reference used batch 4 per GPU).
Target (paper Table 8, ImageNet val, 256 px): rFID 0.90, PSNR 24.19, PSIM 1.02. See
configs/released/first_stage.py for the data and the settings shared by all nine.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.first_stage import first_stage_config


def get_config():
  return first_stage_config(kind='kl', embed_dim=4, ch_mult=(1, 2, 4, 4), batch_size=4)
