"""The demo autoencoder (configs/digits_autoencoder.py) trained with the paper's first-stage loss
(§3.1, reference LPIPSWithDiscriminator): L1 + LPIPS (VGG16) + 1e-6 KL + PatchGAN hinge loss with
the adaptive weight, the discriminator joining at step 150.

  python train.py --config=configs/digits_autoencoder_gan.py --workdir=runs/digits/autoencoder_gan
  python -m ldm_jax.eval.reconstruction --workdir=runs/digits/autoencoder_gan
  bash scripts/compare_first_stage_losses.sh   # this against L1+KL only, same steps, held-out LPIPS

Hardware: CPU works but is slow (~4 s/step on 2 cores: LPIPS's VGG16 dominates); seconds on a GPU.
Result (2 cores, 300 steps, see the closing note of issue 5 / README): lower held-out LPIPS than
the L1+KL model trained for the same steps.
"""
from configs import digits_autoencoder


def get_config():
  c = digits_autoencoder.get_config()
  c.first_stage_loss.update(dict(perceptual_weight=1.0, use_discriminator=True, disc_start=200,
                                 disc_weight=0.1, disc_num_layers=2))
  c.training.update(dict(num_steps=300, checkpoint_every=100, sample_every=100, log_every=25,
                         use_ema=True, ema_decay=0.99))
  return c
