"""The demo autoencoder (configs/digits_autoencoder.py) trained with the paper's first-stage loss
(§3.1, reference LPIPSWithDiscriminator): L1 + LPIPS (VGG16) + 1e-6 KL + PatchGAN hinge loss with
the adaptive weight, the discriminator joining at step 200.

  python train.py --config=configs/digits_autoencoder_gan.py --workdir=runs/digits/autoencoder_gan
  python -m ldm_jax.eval.reconstruction --workdir=runs/digits/autoencoder_gan
  bash scripts/compare_first_stage_losses.sh   # this against L1+KL only, same steps, held-out LPIPS

Hardware: CPU works but is slow (LPIPS's VGG16 dominates the step).
Settings chosen for a 300-step CPU run (measured, see README "Training the first stage"): lr 1e-3
(2e-3, the L1-only demo's, makes the LPIPS run oscillate), EMA 0.99 for evaluation (raw
checkpoints of such short runs are noisy), disc_weight 0.1 from step 200 (the reference's 0.5 from
step 150 made held-out LPIPS worse: the discriminator has too few steps to learn, d_weight sits at
its clamp). The held-out results against L1+KL only: README "Training the first stage".
"""

from ldm_jax.configs import digits_autoencoder


def get_config():
  c = digits_autoencoder.get_config()
  c.first_stage_loss.update(
    dict(
      perceptual_weight=1.0,
      use_discriminator=True,
      disc_start=200,
      disc_weight=0.1,
      disc_num_layers=2,
    )
  )
  c.training.update(
    dict(
      num_steps=300,
      checkpoint_every=100,
      sample_every=100,
      log_every=25,
      use_ema=True,
      ema_decay=0.99,
    )
  )
  c.optimizer.base_learning_rate = 1e-3
  return c
