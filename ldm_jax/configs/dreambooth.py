"""DreamBooth (Ruiz et al. 2023): teach a text-to-image model a subject from a few images, "a photo
of sks dog", with prior preservation: images of the class ("a photo of a dog") drawn by the base
model before training keep the class from drifting. Pick the model after a colon, and ',full' for
full fine-tuning instead of LoRA adapters (the default, as most DreamBooth training today): sd_v1
(the default), sd_v2_base, sdxl, or tiny / tiny_sdxl (the tiny models of configs/sd_finetune.py).

  python train.py --config=configs/dreambooth.py:sd_v1 --workdir=runs/sks_dog \
      --config.training.init_from=runs/sd15 --config.data.path=dog_photos/ \
      --config.dreambooth.instance_prompt='a photo of sks dog' \
      --config.dreambooth.class_prompt='a photo of a dog'
  python sample.py --workdir=runs/sks_dog --prompt='a photo of sks dog in a bucket'

Settings as diffusers' train_dreambooth(_lora).py: 200 class images (num_class_images; 0 = no
prior preservation), prior_loss_weight 1, 400 steps, batch 2 (one instance and one class image
per step on average), learning rate 1e-4 for LoRA (rank 4 on the attention), 5e-6 full; no
condition dropout, the text encoder frozen. The class images are drawn into WORKDIR/class_images
before the first step (a relaunch draws only the missing ones); the instance images need no
captions (each is captioned with the instance prompt).
"""

from ldm_jax.configs import lora, sd_finetune


def get_config(arg: str = 'sd_v1'):
  model, _, mode = arg.partition(',')
  if mode not in ('', 'full'):
    raise ValueError(f"configs/dreambooth.py:{arg}: ',full' or nothing after the model name")
  c = sd_finetune.get_config(model) if mode == 'full' else lora.get_config(model)
  c.data.update(dict(source='folder', random_flip=False, cache_latents=False))
  c.dreambooth.update(dict(num_class_images=200, prior_loss_weight=1.0))
  c.cond_stage.p_uncond = 0.0
  c.optimizer.base_learning_rate = 5e-6 if mode == 'full' else 1e-4
  c.training.update(dict(batch_size=2, num_steps=400, checkpoint_every=100, sample_every=0,
                         use_ema=False, eval_every=0))  # fmt: skip
  if model.startswith('tiny'):
    c.dreambooth.num_class_images = 8
    c.training.update(dict(batch_size=8, num_steps=4, checkpoint_every=2, log_every=1))
  return c
