"""LDM-VQ-4 inpainting on Places (models/ldm/inpainting_big): the vq-f4-noattn first stage also
encodes the masked image (pre-quantisation latent, 3 channels) and the mask is resized to 64x64
(1 channel): UNet in 7, out 3, 256 channels, 8 heads, resblock up/down (387.25M); L1 loss; betas
0.0015 -> 0.0205. The reference trained with lr 1e-6 under a warm-up/cosine LambdaLR.

  python -m ldm_jax.summary --config=configs/released/inpainting_big.py
"""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  return ldm_config(
    'vq_f4_noattn',
    256,
    dict(
      in_channels=7,
      out_channels=3,
      model_channels=256,
      channel_mult=(1, 2, 3, 4),
      attention_resolutions=(8, 4, 2),
      num_heads=8,
      resblock_updown=True,
    ),
    dict(kind='first_stage', conditioning_key='concat'),
    linear_end=0.0205,
    loss_type='l1',
    base_lr=1e-6,
    batch_size=64,
    data=dict(source='folder'),
  )
