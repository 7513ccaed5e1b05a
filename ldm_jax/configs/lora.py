"""LoRA fine-tuning of Stable Diffusion: low-rank adapters of the UNet's attention projections
(to_q, to_k, to_v, to_out.0, as diffusers' train_text_to_image_lora.py), the converted model of
training.init_from frozen. Pick the model after a colon: sd_v1 (the default), sd_v2_base, sdxl
(the SDXL 1.0 base), or tiny / tiny_sdxl (the tiny models of configs/sd_finetune.py, for CPUs
and tests).

  python -m ldm_jax.convert compvis --ckpt=v1-5-pruned-emaonly.safetensors \
      --config=configs/released/sd_v1.py --out=runs/sd15
  python train.py --config=configs/lora.py:sd_v1 --workdir=runs/sd15_lora \
      --config.training.init_from=runs/sd15 --config.data.path=DIR
  python sample.py --workdir=runs/sd15_lora --prompt="..."
  python -m ldm_jax.export --workdir=runs/sd15_lora --format=lora-diffusers \
      --out=pytorch_lora_weights.safetensors

As the diffusers script: rank 4, alpha = rank, AdamW 1e-4 (no scaling by batch), no EMA, the text
encoder frozen, 10% empty prompts. More layers: --config.lora.targets=attn,ff,conv,text (feed-
forward, the ResBlocks' convolutions (LoCon), the text encoder's attention). The run's checkpoints
hold the adapters alone (and the config, which names the base); the base model and its first stage
are read from training.init_from at every start.
"""

from ldm_jax.configs import sd_finetune


def get_config(model: str = 'sd_v1'):
  names = ('sd_v1', 'sd_v2_base', 'sdxl', 'tiny', 'tiny_sdxl')
  if model not in names:
    raise ValueError(f'configs/lora.py:{model}: choose one of {names}')
  c = sd_finetune.get_config(model)
  c.lora.update(dict(rank=4, alpha=4.0, targets='attn'))
  c.optimizer.base_learning_rate = 1e-4
  c.training.update(dict(use_ema=False, eval_every=0))
  if model.startswith('tiny'):
    c.lora.update(dict(rank=2, alpha=2.0))
  return c
