"""The training steps: pure functions (state, batch, frozen) -> (state, metrics), jitted by the
trainer over the mesh. Randomness comes from fold_in(seed, step), so a resumed run draws the same
noise as an uninterrupted one, whatever the number of devices."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ldm_jax.autoencoder import AutoencoderKL
from ldm_jax.diffusion import diffusion_loss, q_sample
from ldm_jax.ema import ema_update
from ldm_jax.losses import kl_autoencoder_terms, vq_autoencoder_terms
from ldm_jax.models import LatentDiffusion
from ldm_jax.train_state import TrainState, lr_schedule


def _apply_gradients(state: TrainState, grads, tx, config):
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema is not None:
    ema = ema_update(ema, params, state.step + 1, config.training.ema_decay)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
  return new, {'grad_norm': optax.tree.norm(grads), 'lr': lr_schedule(config)(state.step)}


def step_key(config, step):
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), step)


def make_autoencoder_step(model, tx, config):
  """Reconstruction (L1) + KL or VQ codebook loss; LPIPS/GAN terms join the same dict later."""
  fs, loss_cfg = config.first_stage, config.first_stage_loss
  is_kl = isinstance(model, AutoencoderKL)

  def step(state: TrainState, batch, frozen=None):
    del frozen
    k_post, k_drop = jax.random.split(step_key(config, state.step))
    x = batch['image']

    def loss_fn(params):
      out = model.apply({'params': params}, x, k_post, train=True, rngs={'dropout': k_drop})
      if is_kl:
        rec, posterior = out
        terms = kl_autoencoder_terms(x, rec, posterior, loss_cfg.kl_weight)
      else:
        rec, codebook_loss, indices = out
        terms = vq_autoencoder_terms(x, rec, codebook_loss, loss_cfg.codebook_weight, indices,
                                     fs.n_embed)
      return terms['loss'], terms

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, extra = _apply_gradients(state, grads, tx, config)
    return state, {**terms, **extra}

  return step


def drop_labels(key, labels, p_uncond: float, null_label: int):
  """Classifier-free guidance training: replace each label by null_label with probability p."""
  if p_uncond <= 0:
    return labels
  return jnp.where(jax.random.bernoulli(key, p_uncond, labels.shape), null_label, labels)


def make_ldm_step(ldm: LatentDiffusion, tx, config):
  """LatentDiffusion.p_losses on first-stage latents of the batch (first stage frozen)."""
  d, cs = config.diffusion, config.cond_stage
  conditional = ldm.cond_stage is not None

  def step(state: TrainState, batch, first_stage_params):
    k_post, k_t, k_noise, k_drop, k_uncond = jax.random.split(step_key(config, state.step), 5)
    z0 = jax.lax.stop_gradient(ldm.latents_from_batch(first_stage_params, batch, k_post))
    z0 = z0 * state.scale_factor
    labels = drop_labels(k_uncond, batch['label'], cs.p_uncond, cs.null_label) if conditional else None
    t = jax.random.randint(k_t, (z0.shape[0],), 0, d.timesteps)
    noise = jax.random.normal(k_noise, z0.shape, z0.dtype)
    x_t = q_sample(ldm.schedule, z0, t, noise)

    def loss_fn(params):
      out = ldm.model_output(params, x_t, t, labels, dropout_key=k_drop)
      return diffusion_loss(ldm.schedule, out, z0, noise, t, parameterization=d.parameterization,
                            loss_type=d.loss_type, l_simple_weight=d.l_simple_weight,
                            original_elbo_weight=d.original_elbo_weight)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state, extra = _apply_gradients(state, grads, tx, config)
    return state, {**metrics, **extra}

  return step


def latent_std(ldm: LatentDiffusion, first_stage_params, batch, key):
  """std over all elements of the first batch's (sampled) latents; scale_factor = 1 / this
  (the reference's scale_by_std, paper appendix D.1/G)."""
  return jnp.std(ldm.latents_from_batch(first_stage_params, batch, key))
