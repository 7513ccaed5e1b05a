"""Retrieval-augmented diffusion, 768 px (configs/retrieval-augmented-diffusion/768x768): UNet
1335.48M on 48x48x16 latents of a KL f16 autoencoder (the kl-f16 architecture), cross-attending to
precomputed CLIP ViT-L/14 embeddings (768 wide, given as is); scale factor 0.22765929; betas
0.0015 -> 0.015; lr 1e-4.

  python -m ldm_jax.summary --config=configs/released/rdm_768.py
"""

from configs.released.ldm import ldm_config


def get_config():
  return ldm_config(
    'kl_f16',
    768,
    dict(
      model_channels=448,
      channel_mult=(1, 2, 3, 4),
      attention_resolutions=(4, 2, 1),
      num_head_channels=32,
      use_spatial_transformer=True,
      transformer_depth=1,
      context_dim=768,
    ),
    dict(kind='identity', conditioning_key='crossattn', channels=768),
    linear_end=0.015,
    base_lr=1e-4,
    batch_size=64,
    scale_factor=0.22765929,
    data=dict(source='folder'),
  )
