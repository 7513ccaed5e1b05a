"""Demo, stage 1: a small KL autoencoder (f=4: 32x32x3 images -> 8x8x3 latents) on the embedded
scikit-learn digits (no download).

  python train.py --config=configs/digits_autoencoder.py --workdir=runs/digits/autoencoder
  python -m ldm_jax.eval.reconstruction --workdir=runs/digits/autoencoder   # held-out digits

Hardware: any CPU; ~3 min on 2 cores (two host devices). Reaches a mean |x - x_rec| of about 0.03
(images in [-1, 1]); reconstruction grids in WORKDIR/images. Loss: the reference's KL autoencoder
loss without its perceptual and adversarial terms (per-sample-summed L1 + 1e-6 KL, Adam(0.5, 0.9)),
because LPIPS's VGG16 costs ~10x this model's step on a CPU; configs/digits_autoencoder_gan.py is
the same model with the paper's full loss.
"""

from ldm_jax.config import base_config


def set_first_stage(fs) -> None:
  """The demo's first stage; the LDM config uses the same one."""
  fs.update(
    dict(
      kind='kl',
      embed_dim=3,
      z_channels=3,
      ch=32,
      ch_mult=(1, 2, 2),
      num_res_blocks=1,
      attn_resolutions=(),
      resolution=32,
      attn_type='vanilla',
    )
  )


def get_config():
  c = base_config()
  c.stage = 'autoencoder'
  c.data.update(
    dict(source='digits', image_size=32, random_flip=False)
  )  # flipped digits are not digits
  set_first_stage(c.first_stage)
  c.first_stage_loss.update(dict(perceptual_weight=0.0, use_discriminator=False))
  c.optimizer.update(dict(name='adam', base_learning_rate=2e-3, b1=0.5, b2=0.9, weight_decay=0.0))
  c.training.update(
    dict(
      batch_size=16,
      num_steps=500,
      log_every=50,
      checkpoint_every=250,
      sample_every=250,
      use_ema=False,
      num_sample_images=16,
    )
  )
  return c
