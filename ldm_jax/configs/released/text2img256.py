"""LDM-VQ-4 text-to-image 256 (models/ldm/text2img256): UNet 403.62M with cross-attention on a
BERT-style transformer (640 wide, 32 layers, 186.15M) over bert-base-uncased tokens; batch 28,
lr 2e-6 x batch.

  python -m ldm_jax.summary --config=configs/released/text2img256.py
"""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  return ldm_config(
    'vq_f4',
    256,
    dict(
      model_channels=192,
      channel_mult=(1, 2, 3, 5),
      attention_resolutions=(8, 4, 2),
      num_head_channels=32,
      use_spatial_transformer=True,
      transformer_depth=1,
      context_dim=640,
    ),
    dict(
      kind='bert', embed_dim=640, n_layer=32, vocab_size=30522, max_seq_len=77, p_uncond=0.1
    ),  # empty prompts for guidance (our choice: not published)
    base_lr=2e-6,
    batch_size=28,
    data=dict(source='folder'),
  )
