"""LDM-VQ-4 4x super-resolution (models/ldm/bsr_sr): the 64x64 low-resolution image (in [-1, 1]) is
concatenated to the 64x64x3 latent (UNet in 6, out 3, 160 channels, attention only at ds 8;
113.62M); BSR degradation data; batch 64, lr 1e-6 x batch; betas 0.0015 -> 0.0155.

  python -m ldm_jax.summary --config=configs/released/bsr_sr.py

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  return ldm_config(
    'vq_f4',
    256,
    dict(
      in_channels=6,
      out_channels=3,
      model_channels=160,
      channel_mult=(1, 2, 2, 4),
      attention_resolutions=(16, 8),
      num_head_channels=32,
    ),
    dict(kind='identity', conditioning_key='concat', channels=3),
    linear_end=0.0155,
    base_lr=1e-6,
    batch_size=64,
    data=dict(source='folder', degradation='bsr_light'),
  )
