"""VQ f=8, Z=256, 32x32x4 latents: the reference's models/first_stage_models/vq-f8-n256/config.yaml.

  python train.py --config=configs/released/vq_f8_n256.py --workdir=runs/vq_f8_n256

Hardware: GPUs or a TPU slice (256x256 images; the reference used batch 10 per GPU).
Target (paper Table 8, ImageNet val, 256 px): rFID 1.49, PSNR 22.35, PSIM 1.26. See
configs/released/first_stage.py for the data and the settings shared by all nine.

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.first_stage import first_stage_config


def get_config():
  return first_stage_config(
    kind='vq',
    embed_dim=4,
    n_embed=256,
    ch_mult=(1, 2, 2, 4),
    attn_resolutions=(32,),
    disc_start=250001,
    disc_weight=0.75,
    batch_size=10,
  )
