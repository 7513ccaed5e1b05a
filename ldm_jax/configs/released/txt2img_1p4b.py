"""LDM-KL-8-G text-to-image, LAION-400M, 1.45B parameters (configs/latent-diffusion/
txt2img-1p4B-eval): UNet 872.30M (320 channels, 8 heads, legacy=False) with cross-attention on a
BERT-style transformer (1280 wide, 32 layers, 581.99M); kl-f8 latents with the fixed scale factor
0.18215; betas 0.00085 -> 0.012; no EMA. Paper: FID 12.63 on MS-COCO (guidance 1.5, 250 DDIM).

  python -m ldm_jax.summary --config=configs/released/txt2img_1p4b.py
  python train.py --config=configs/released/txt2img_1p4b.py --workdir=runs/txt2img \
      --config.data.path=DIR   # images, each with its captions in a .txt file beside it

On a TPU v5e-8 (BENCHMARKS.md "TPU pod slices": XLA cost-model estimates, not measurements): bf16
compute, parameters and Adam moments FSDP-sharded over the 8 chips and full remat
(--config.training.compute_dtype=bfloat16 --config.mesh.data=1 --config.mesh.fsdp=-1
--config.training.remat=full) at global batch 64 need 6.0 GiB per chip of 16 (2.1 GiB of arguments,
3.5 GiB of temporaries): it fits, est. 0.21 s/step (300 img/s; 0.033 s if compute-bound).
"""

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
