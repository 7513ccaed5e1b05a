"""KL f=32, 8x8x64 latents: the reference's models/first_stage_models/kl-f32/config.yaml.

  python train.py --config=configs/released/kl_f32.py --workdir=runs/kl_f32

Hardware: GPUs or a TPU slice (256x256 images; the reference used batch 6 per GPU).
Target (paper Table 8, ImageNet val, 256 px): rFID 2.04, PSNR 22.27, PSIM 1.41. See
configs/released/first_stage.py for the data and the settings shared by all nine.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.first_stage import first_stage_config


def get_config():
  return first_stage_config(
    kind='kl', embed_dim=64, ch_mult=(1, 1, 2, 2, 4, 4), attn_resolutions=(16, 8), batch_size=6
  )
