"""Fine-tune Stable Diffusion on your own captioned images, from converted weights, into a new
workdir (training.init_from; the source stays as it is). Pick the model after a colon: sd_v1 (the
default), sd_v2_base, sd_v2_768_v, sd_v1_inpainting, sdxl (the SDXL 1.0 base), or tiny /
tiny_inpainting / tiny_sdxl (below).

  python -m ldm_jax.convert compvis --ckpt=v1-5-pruned-emaonly.safetensors \
      --config=configs/released/sd_v1.py --out=runs/sd15
  python train.py --config=configs/sd_finetune.py:sd_v1 --workdir=runs/sd15_mine \
      --config.training.init_from=runs/sd15 --config.data.path=DIR
  python sample.py --workdir=runs/sd15_mine --prompt="..."

Data: a folder of images, each with a .txt of captions beside it (one per line, one drawn per use;
--config.data.path), or TFDS captions (--config.data.source=tfds --config.data.name=coco_captions
--config.data.caption_key=captions/text). As SD trains: the text encoder frozen, 10% empty prompts
(p_uncond) for classifier-free guidance, no EMA (--config.training.use_ema=True for one,
ema_decay 0.9999), AdamW 1e-5 (no scaling by batch), bf16 compute, the parameters, EMA and Adam
moments FSDP-sharded over every chip: an 860M UNet with Adam is ~14 GB in fp32, so one 16 GB chip
cannot hold it; sharded over a v5e-8 it is under 2 GB per chip. Batch 32 at 512 px; raise
--config.training.grad_accum_steps when activations do not fit, or set --config.training.remat=full.

tiny: an SD 2.x-shaped model (OpenCLIP-style text encoder, v prediction, linear projections) of a
few hundred thousand parameters, fine-tuned on the embedded digits' captions ("a handwritten digit
seven", ...) at 16x16 on a CPU in the tests (tests/test_stable_diffusion.py converts random weights
to start from):
  python train.py --config=configs/sd_finetune.py:tiny --workdir=runs/sd_tiny_ft \
      --config.training.init_from=runs/sd_tiny
"""

import importlib


def get_config(model: str = 'sd_v1'):
  if model == 'tiny':
    return tiny()
  if model == 'tiny_inpainting':
    return tiny(inpainting=True)
  if model == 'tiny_sdxl':
    return tiny_sdxl()
  names = ('sd_v1', 'sd_v2_base', 'sd_v2_768_v', 'sd_v1_inpainting', 'sdxl')
  if model not in names:
    raise ValueError(
      f'configs/sd_finetune.py:{model}: choose one of {names}, tiny, tiny_inpainting or tiny_sdxl'
    )
  if model == 'sdxl':
    return sdxl()
  return importlib.import_module(f'ldm_jax.configs.released.{model}').get_config()


def sdxl():
  """SDXL 1.0 base (configs/released/sdxl_base.py): both text encoders frozen, 10% of captions
  dropped to the zeroed unconditional input, bf16, FSDP over every chip; 1024 px, or
  --config.data.buckets=sdxl for SDXL's aspect-ratio buckets with their size conditioning."""
  from ldm_jax.configs.released.sdxl_base import get_config as base

  c = base()
  c.cond_stage.p_uncond = 0.1
  c.training.batch_size = 32
  return c


def tiny_sdxl():
  """An SDXL-shaped model (two text encoders, per-level depth, vector input with size
  conditioning) of the tiny random diffusers pipeline tests/test_sdxl.py builds and converts,
  fine-tuned on the digits' captions at 16x16."""
  c = sdxl()
  c.data.update(dict(source='digits', image_size=16, cache_latents=False))
  c.first_stage.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16))
  c.unet.update(
    dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
         transformer_depths=(0, 2), context_dim=64, num_head_channels=16, adm_in_channels=80)
  )  # fmt: skip
  c.cond_stage.update(dict(embed_dim=32, n_layer=3, n_head=4, projection_dim=32, micro_dim=8,
                           tokenizer='pypi:open_clip_torch'))  # fmt: skip
  c.cond_stage.first_encoder.update(
    dict(embed_dim=32, n_layer=3, n_head=4, tokenizer='pypi:open_clip_torch')
  )
  c.training.update(dict(batch_size=8, num_steps=20, log_every=1, checkpoint_every=10,
                         sample_every=0, num_sample_images=8, compute_dtype='float32'))  # fmt: skip
  c.optimizer.base_learning_rate = 1e-4
  c.sampling.update(dict(sampler='ddim', steps=4, guidance_scale=3.0, spacing=''))
  return c


def tiny(inpainting: bool = False):
  """``inpainting``: the text-guided inpainting task (9-channel UNet, as SD 1.x inpainting)."""
  from ldm_jax.configs.released.stable_diffusion import sd_config

  c = sd_config(2, 16, 'v', in_channels=9 if inpainting else 4)
  if inpainting:
    c.task, c.cond_stage.conditioning_key = 'text_inpainting', 'hybrid'
  c.data.update(dict(source='digits', image_size=16, cache_latents=False))
  c.first_stage.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16))
  c.unet.update(
    dict(
      model_channels=32,
      channel_mult=(1, 2),
      num_res_blocks=1,
      attention_resolutions=(1,),
      num_head_channels=16,
      context_dim=32,
    )
  )
  c.cond_stage.update(
    dict(embed_dim=32, n_layer=3, n_head=4, projection_dim=32, tokenizer='pypi:open_clip_torch')
  )
  c.training.update(
    dict(
      batch_size=8,
      num_steps=20,
      log_every=2,
      checkpoint_every=10,
      sample_every=0,
      num_sample_images=8,
      compute_dtype='float32',
    )
  )
  c.optimizer.base_learning_rate = 1e-4
  c.sampling.update(dict(steps=5, guidance_scale=3.0))
  return c
