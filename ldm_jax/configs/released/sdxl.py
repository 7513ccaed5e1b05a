"""Shared builder for SDXL 1.0 (Stability-AI/generative-models configs/inference/sd_xl_base.yaml,
sd_xl_refiner.yaml): the LDM UNet with per-level transformer depth, 64-channel heads, Linear
projections and the vector input ``y`` (ADM's num_classes='sequential'), on kl-f8 latents (SDXL's
VAE, scale factor 0.13025), betas 0.00085 -> 0.012 (the reference's 'linear'), eps prediction.

  base:    UNet 320 (1, 2, 4), depth (0, 2, 10), context 2048 = CLIP ViT-L/14 (768, quick-GELU)
           + OpenCLIP ViT-bigG/14 (1280, 32 layers, GELU), both penultimate states without the
           final layer norm; y 2816 = pooled bigG + original size, crop, target size (6 x 256)
  refiner: UNet 384 (1, 2, 4, 4), depth 4 at levels 2 and 4, context 1280 (bigG alone);
           y 2560 = pooled + original size, crop, aesthetic score (5 x 256)

Weights: sd_xl_base_1.0.safetensors / sd_xl_refiner_1.0.safetensors (python -m ldm_jax.convert
compvis) or the diffusers folders (python -m ldm_jax.convert diffusers); see README "Stable
Diffusion". Sampling defaults as diffusers' StableDiffusionXLPipeline: 1024 px, guidance 5, the
unconditional input zeros for the base (force_zeros_for_empty_prompt), the empty prompt for the
refiner. Fine-tuning settings as SD's (configs/released/stable_diffusion.py).
"""

from ldm_jax.configs.released.stable_diffusion import CLIP_L, text_to_image_config

OPENCLIP_BIGG = dict(
  kind='sdxl',
  embed_dim=1280,
  n_layer=32,
  n_head=20,
  act='gelu',
  layer='penultimate_hidden',
  projection_dim=1280,
  vocab_size=49408,
  max_seq_len=77,
  pad_token_id=0,  # diffusers' tokenizer_2 pads with '!'
  tokenizer='openai/clip-vit-large-patch14',  # the same BPE vocabulary
)
VIT_L = {k: CLIP_L[k] for k in ('embed_dim', 'n_layer', 'n_head', 'act', 'vocab_size',
                                'pad_token_id', 'tokenizer')}  # fmt: skip


def sdxl_config(refiner: bool = False, image_size: int = 1024):
  unet = dict(
    model_channels=384 if refiner else 320,
    channel_mult=(1, 2, 4, 4) if refiner else (1, 2, 4),
    attention_resolutions=(4, 2),
    use_spatial_transformer=True,
    transformer_depth=4 if refiner else 1,
    transformer_depths=() if refiner else (0, 2, 10),
    num_head_channels=64,
    use_linear_in_transformer=True,
    context_dim=1280 if refiner else 2048,
    adm_in_channels=2560 if refiner else 2816,
    legacy=False,
    in_channels=4,
    out_channels=4,
  )
  cond = dict(OPENCLIP_BIGG, p_uncond=0.0, trainable=False)
  if refiner:
    cond.update(micro_conditioning='original_size,crop_top_left,aesthetic_score',
                zeros_for_empty_prompt=False)  # fmt: skip
  else:
    cond.update(first_encoder=VIT_L)
  c = text_to_image_config(image_size, unet, cond, scale_factor=0.13025)
  c.sampling.update(dict(sampler='euler', steps=30, guidance_scale=5.0, spacing='leading'))
  return c
