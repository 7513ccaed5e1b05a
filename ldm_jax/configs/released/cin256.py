"""LDM-VQ-8 class-conditional ImageNet 256 (models/ldm/cin256 = configs/latent-diffusion/
cin-ldm-vq-f8): UNet 394.98M with cross-attention on a ClassEmbedder(1000, 512) token; vq-f8
first stage; batch 64, lr 1e-6 x batch.

  python train.py --config=configs/released/cin256.py --workdir=runs/cin256

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  return ldm_config(
    'vq_f8',
    256,
    dict(
      model_channels=256,
      channel_mult=(1, 2, 4),
      attention_resolutions=(4, 2, 1),
      num_head_channels=32,
      use_spatial_transformer=True,
      transformer_depth=1,
      context_dim=512,
    ),
    dict(kind='class', n_classes=1000, embed_dim=512),
    base_lr=1e-6,
    batch_size=64,
    data=dict(source='tfds', name='imagenet2012'),
  )
