"""VQ f=4, Z=8192, no attention (inpainting's first stage): the reference's
models/first_stage_models/vq-f4-noattn/config.yaml.

  python train.py --config=configs/released/vq_f4_noattn.py --workdir=runs/vq_f4_noattn

Hardware: GPUs or a TPU slice (256x256 images; the reference used batch 8 per GPU).
Target (paper Table 8, ImageNet val, 256 px): rFID 1.06, PSNR 25.21, PSIM 0.72. See
configs/released/first_stage.py for the data and the settings shared by all nine.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.first_stage import first_stage_config


def get_config():
  return first_stage_config(
    kind='vq',
    embed_dim=3,
    n_embed=8192,
    ch_mult=(1, 2, 4),
    attn_type='none',
    disc_start=11,
    disc_weight=0.75,
    batch_size=8,
  )
