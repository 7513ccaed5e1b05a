"""Demo, stage 2: a class-conditional LDM (cross-attention on a class embedding, classifier-free
guidance with null class 10) on the latents of configs/digits_autoencoder.py.

  python train.py --config=configs/digits_ldm.py --workdir=runs/digits/ldm \
      --config.first_stage.checkpoint=runs/digits/autoencoder
  python sample.py --workdir=runs/digits/ldm --class_label=all --guidance_scale=3 --outdir=runs/digits/samples

Hardware: any CPU; ~5 min on 2 cores (two host devices); a 5.7M-parameter UNet on 8x8x3 latents.
Reaches: a digit classifier trained on real digits assigns the
requested class to >= 80% of guided samples (scripts/demo.sh prints the figure).
"""

from configs.digits_autoencoder import set_first_stage
from ldm_jax.config import base_config


def get_config():
  c = base_config()
  c.stage = 'ldm'
  c.data.update(dict(source='digits', image_size=32, random_flip=False, cache_latents=True))
  set_first_stage(c.first_stage)
  c.first_stage.checkpoint = 'runs/digits/autoencoder'
  c.unet.update(
    dict(
      model_channels=64,
      channel_mult=(1, 2),
      num_res_blocks=2,
      attention_resolutions=(2,),
      num_head_channels=32,
      use_spatial_transformer=True,
      transformer_depth=1,
      context_dim=64,
    )
  )
  c.task = 'class'
  c.cond_stage.update(dict(kind='class', n_classes=11, embed_dim=64, null_label=10, p_uncond=0.1))
  c.diffusion.update(
    dict(linear_start=0.0015, linear_end=0.0195, loss_type='l2', scale_by_std=True)
  )
  c.optimizer.update(dict(name='adamw', base_learning_rate=1e-3, warmup_steps=100))
  c.training.update(
    dict(
      batch_size=32,
      num_steps=800,
      log_every=100,
      checkpoint_every=400,
      sample_every=400,
      num_sample_images=20,
    )
  )
  c.sampling.update(dict(sampler='ddim', steps=50, eta=0.0, guidance_scale=3.0))
  return c
