"""VQ f=16, Z=16384, 16x16x8 latents: the reference's models/first_stage_models/vq-f16/config.yaml.

  python train.py --config=configs/released/vq_f16.py --workdir=runs/vq_f16

Hardware: GPUs or a TPU slice (256x256 images; the reference used batch 14 per GPU).
Target (paper Table 8, ImageNet val, 256 px): rFID 5.15, PSNR 20.83, PSIM 1.73. See
configs/released/first_stage.py for the data and the settings shared by all nine.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.first_stage import first_stage_config


def get_config():
  return first_stage_config(
    kind='vq',
    embed_dim=8,
    n_embed=16384,
    ch_mult=(1, 1, 2, 2, 4),
    attn_resolutions=(16,),
    disc_start=250001,
    disc_weight=0.75,
    disc_num_layers=2,
    batch_size=14,
  )
