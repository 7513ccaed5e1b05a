"""LDM-VQ-4 class-conditional ImageNet 256, v2 (configs/latent-diffusion/cin256-v2): UNet 400.92M,
one attention head per layer, ClassEmbedder(1001, 512) whose index 1000 is the null class for
classifier-free guidance (README: FID 3.6 with guidance). The yaml has no data section and no
EMA; lr 1e-4 (batch not published: 64 here, scaled).

  python train.py --config=configs/released/cin256_v2.py --workdir=runs/cin256_v2

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("TPU pod slices")."""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  c = ldm_config(
    'vq_f4',
    256,
    dict(
      model_channels=192,
      channel_mult=(1, 2, 3, 5),
      attention_resolutions=(8, 4, 2),
      num_heads=1,
      use_spatial_transformer=True,
      transformer_depth=1,
      context_dim=512,
    ),
    dict(kind='class', n_classes=1001, embed_dim=512, null_label=1000, p_uncond=0.1),
    base_lr=1e-4,
    batch_size=64,
    use_ema=False,
    data=dict(source='tfds', name='imagenet2012'),
  )
  c.sampling.guidance_scale = 3.0
  return c
