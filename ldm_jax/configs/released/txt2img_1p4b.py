"""LDM-KL-8-G text-to-image, LAION-400M, 1.45B parameters (configs/latent-diffusion/
txt2img-1p4B-eval): UNet 872.30M (320 channels, 8 heads, legacy=False) with cross-attention on a
BERT-style transformer (1280 wide, 32 layers, 581.99M); kl-f8 latents with the fixed scale factor
0.18215; betas 0.00085 -> 0.012; no EMA. Paper: FID 12.63 on MS-COCO (guidance 1.5, 250 DDIM).

  python -m ldm_jax.summary --config=configs/released/txt2img_1p4b.py
  python train.py --config=configs/released/txt2img_1p4b.py --workdir=runs/txt2img \
      --config.data.path=DIR   # images, each with its captions in a .txt file beside it

Per-chip memory and cost-model step times on TPU slices: BENCHMARKS.md ("TPU pod slices")."""

from ldm_jax.configs.released.ldm import ldm_config


def get_config():
  c = ldm_config(
    'kl_f8',
    256,
    dict(
      model_channels=320,
      channel_mult=(1, 2, 4, 4),
      attention_resolutions=(4, 2, 1),
      num_heads=8,
      use_spatial_transformer=True,
      transformer_depth=1,
      context_dim=1280,
      legacy=False,
    ),
    dict(
      kind='bert', embed_dim=1280, n_layer=32, vocab_size=30522, max_seq_len=77, p_uncond=0.1
    ),  # empty prompts for guidance (our choice: not published)
    linear_start=0.00085,
    linear_end=0.012,
    base_lr=5e-5,
    batch_size=64,
    use_ema=False,
    scale_factor=0.18215,
    data=dict(source='folder'),
  )
  c.sampling.update(dict(steps=250, guidance_scale=1.5))
  return c
