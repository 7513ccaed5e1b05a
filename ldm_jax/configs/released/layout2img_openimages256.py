"""LDM-VQ-4 layout-to-image on OpenImages (models/ldm/layout2img-openimages256): UNet 246.28M with
3-deep spatial transformers cross-attending to a BERT-style transformer (512 wide, 16 layers,
vocab 8192, 92 tokens, 58.86M) over pre-tokenised bounding boxes (no text tokenizer); L1 loss;
batch 24, lr 2e-6 x batch; betas 0.0015 -> 0.0205.

  python -m ldm_jax.summary --config=configs/released/layout2img_openimages256.py

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("Full compiles")."""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  return ldm_config(
    'vq_f4',
    256,
    dict(
      model_channels=128,
      channel_mult=(1, 2, 3, 4),
      attention_resolutions=(8, 4, 2),
      num_head_channels=32,
      use_spatial_transformer=True,
      transformer_depth=3,
      context_dim=512,
    ),
    dict(
      kind='bert', embed_dim=512, n_layer=16, vocab_size=8192, max_seq_len=92, use_tokenizer=False
    ),
    linear_end=0.0205,
    loss_type='l1',
    base_lr=2e-6,
    batch_size=24,
    data=dict(source='folder'),
  )
