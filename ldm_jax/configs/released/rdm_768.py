"""Retrieval-augmented diffusion, 768 px (configs/retrieval-augmented-diffusion/768x768): UNet
1335.48M on 48x48x16 latents of a KL f16 autoencoder (the kl-f16 architecture), cross-attending to
precomputed CLIP ViT-L/14 embeddings (768 wide, given as is); scale factor 0.22765929; betas
0.0015 -> 0.015; lr 1e-4.

  python -m ldm_jax.summary --config=configs/released/rdm_768.py
  python -m ldm_jax.convert clip --path=clip-vit-large-patch14 --out=runs/clip_l14  # prompts
  python -m ldm_jax.convert compvis --ckpt=model.ckpt --config=configs/released/rdm_768.py \
      --config.cond_stage.clip_text=runs/clip_l14 --out=runs/rdm
  python sample.py --workdir=runs/rdm --prompt='a painting of a fox' --guidance_scale=5
  (or --embeddings=FILE.npy: CLIP embeddings [L, 768] of retrieved neighbours, as knn2img.py)
"""

from ldm_jax.configs.released.ldm import ldm_config


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
