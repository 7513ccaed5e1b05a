"""Shared builder for Stable Diffusion (CompVis/stable-diffusion configs/stable-diffusion/
v1-inference.yaml, v1-inpainting-inference.yaml; Stability-AI/stablediffusion configs/
stable-diffusion/v2-inference.yaml, v2-inference-v.yaml): the LDM of this paper on kl-f8 latents
(scale factor 0.18215, fixed), a UNet of 320 channels (1, 2, 4, 4) with one SpatialTransformer per
attention level (downsampling 1, 2, 4), legacy=False, betas 0.00085 -> 0.012 ('linear': the
reference's sqrt-linear), cross-attention on a frozen CLIP text encoder.

  SD 1.x: CLIP ViT-L/14 text (12 layers, 768, quick-GELU, last layer), 8 heads per attention.
  SD 2.x: OpenCLIP ViT-H/14 text (24 layers, 1024, GELU, penultimate layer), 64-channel heads,
          Linear proj_in/proj_out (use_linear_in_transformer).

Weights: the released .ckpt/.safetensors files (python -m ldm_jax.convert compvis) or diffusers
folders (python -m ldm_jax.convert diffusers); see README "Stable Diffusion". Fine-tuning settings
(not in the inference yamls; our choice, as common SD fine-tuning): AdamW at 1e-5 without
learning-rate scaling, 10% empty prompts (p_uncond) for classifier-free guidance, EMA off, the text
encoder frozen as SD trains it, bf16 compute, FSDP over all chips (an 860M UNet + Adam is 14 GB
in fp32: it needs sharding on 16 GB chips; per-chip memory on a v5e-8: BENCHMARKS.md).
"""

from ldm_jax.configs.released.ldm import ldm_config

CLIP_L = dict(
  kind='clip',
  embed_dim=768,
  n_layer=12,
  n_head=12,
  act='quick_gelu',
  layer='last',
  vocab_size=49408,
  max_seq_len=77,
  pad_token_id=49407,
  tokenizer='openai/clip-vit-large-patch14',
)
OPENCLIP_H = dict(
  kind='openclip',
  embed_dim=1024,
  n_layer=24,
  n_head=16,
  act='gelu',
  layer='penultimate',
  projection_dim=1024,
  vocab_size=49408,
  max_seq_len=77,
  pad_token_id=0,  # open_clip.tokenize pads with 0
  tokenizer='openai/clip-vit-large-patch14',  # the same BPE vocabulary as OpenCLIP's
)


def sd_config(version: int, image_size: int, parameterization: str = 'eps', in_channels: int = 4):
  v2 = version == 2
  unet = dict(
    model_channels=320,
    channel_mult=(1, 2, 4, 4),
    attention_resolutions=(4, 2, 1),
    use_spatial_transformer=True,
    transformer_depth=1,
    context_dim=1024 if v2 else 768,
    legacy=False,
    in_channels=in_channels,
    out_channels=4,
  )
  unet.update(
    dict(num_head_channels=64, use_linear_in_transformer=True) if v2 else dict(num_heads=8)
  )
  cond = dict(OPENCLIP_H if v2 else CLIP_L, p_uncond=0.1, trainable=False)
  c = text_to_image_config(image_size, unet, cond, scale_factor=0.18215)
  c.diffusion.parameterization = parameterization
  c.sampling.update(dict(sampler='dpmpp_2m', steps=25, guidance_scale=7.5))
  return c


def text_to_image_config(image_size: int, unet: dict, cond: dict, scale_factor: float):
  """What SD 1/2 and SDXL share: kl-f8 latents, betas 0.00085 -> 0.012, and the fine-tuning
  settings above."""
  c = ldm_config(
    'kl_f8',
    image_size,
    unet,
    cond,
    linear_start=0.00085,
    linear_end=0.012,
    base_lr=1e-5,
    scale_lr=False,
    batch_size=32,
    use_ema=False,
    scale_factor=scale_factor,
    data=dict(source='folder'),
  )
  c.first_stage.checkpoint = ''  # the released checkpoints hold their own first stage
  c.data.random_flip = False  # captions may say left and right
  c.training.update(dict(compute_dtype='bfloat16', num_steps=10_000, checkpoint_every=1000))
  c.mesh.update(dict(data=1, fsdp=-1))
  return c
