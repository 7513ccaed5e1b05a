"""The first stage's training step (the reference's LPIPSWithDiscriminator / VQLPIPSWithDiscriminator
with its two optimizers): a generator update, then a discriminator update, in one jitted function.

Generator: L1 (+ LPIPS) reconstruction, KL or codebook regulariser, adversarial term with the
reference's adaptive weight (``train.losses``). The AE forward runs once under ``jax.vjp``; the
gradients of the reconstruction loss and of the adversarial loss w.r.t. the reconstruction are taken
separately, their norms at the decoder's last conv weight give d_weight, and their weighted sum is
pulled back through the autoencoder once. Then the discriminator is updated, as the reference's
second optimizer step, on reconstructions of the updated autoencoder (a fresh forward;
``disc_on_updated_reconstructions=False`` reuses the generator pass's instead, one forward less).
The step's third argument (``frozen``) holds the LPIPS parameters, or None without LPIPS.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from ldm_jax.nn.autoencoder import AutoencoderKL
from ldm_jax.train.losses import D_LOSSES, adaptive_weight, adopt_weight, codebook_stats, nll_loss
from ldm_jax.train.state import TrainState
from ldm_jax.train.step_common import apply_gradients, step_key


@dataclasses.dataclass(frozen=True)
class AutoencoderLoss:
  """Everything the step closes over: the models, optimizers and loss settings."""

  model: Any
  tx: Any
  config: Any
  disc: Any = None
  tx_disc: Any = None
  lpips_fn: Callable | None = None
  tx_logvar: Any = None

  @property
  def kind(self) -> str:
    return 'kl' if isinstance(self.model, AutoencoderKL) else 'vq'

  @property
  def reg_weight(self) -> float:
    L = self.config.first_stage_loss
    return L.kl_weight if self.kind == 'kl' else L.codebook_weight


def forward(loss: AutoencoderLoss, params, x, key, k_drop, collect_last_input: bool):
  """((reconstruction, regulariser), (decoder's last conv input or None, codebook stats))."""
  kwargs = dict(train=True, rngs={'dropout': k_drop})
  if collect_last_input:
    out, inter = loss.model.apply({'params': params}, x, key, mutable=['intermediates'], **kwargs)
    last_in = inter['intermediates']['decoder']['pre_conv_out'][0]
  else:
    out, last_in = loss.model.apply({'params': params}, x, key, **kwargs), None
  if loss.kind == 'kl':
    rec, posterior = out
    return (rec, jnp.sum(posterior.kl()) / x.shape[0]), (last_in, {})
  rec, codebook_loss, indices = out
  n_embed = loss.config.first_stage.n_embed
  return (rec, codebook_loss), (last_in, codebook_stats(indices, n_embed))


def apply_disc(disc, variables, images):
  """D logits in training mode (batch statistics); returns updated norm statistics too."""
  extra = [k for k in variables if k != 'params']
  if not extra:
    return disc.apply(variables, images, train=True), variables
  logits, updates = disc.apply(variables, images, train=True, mutable=extra)
  return logits, {**variables, **updates}


def _grad_at_last_conv(params, last_in):
  """d(loss)/d(rec) -> d(loss)/d(decoder.conv_out.kernel): a vjp of the last conv alone."""
  kernel = params['decoder']['conv_out']['kernel']
  conv = lambda w: jax.lax.conv_general_dilated(
    last_in,
    w.astype(last_in.dtype),
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
  )
  _, conv_vjp = jax.vjp(conv, kernel)
  return lambda g: conv_vjp(g.astype(last_in.dtype))[0]


def generator_update(loss: AutoencoderLoss, state: TrainState, x, keys, frozen):
  """The autoencoder's update: (state, metrics, reconstruction, D variables after the generator
  pass (BatchNorm statistics), disc_factor)."""
  L = loss.config.first_stage_loss
  k_post, k_drop = keys
  ls = state.loss_state
  (rec, reg), pullback, (last_in, stats) = jax.vjp(
    lambda p: forward(loss, p, x, k_post, k_drop, loss.disc is not None), state.params, has_aux=True
  )
  use_lpips = loss.lpips_fn is not None and L.perceptual_weight > 0

  def nll_fn(r, logvar):
    p = loss.lpips_fn(frozen, x, r) if use_lpips else None
    nll, rec_mean = nll_loss(x, r, p, L.perceptual_weight, logvar, loss.kind)
    return nll, (rec_mean, jnp.mean(p) if p is not None else jnp.zeros(()))

  (nll, (rec_mean, p_mean)), (g_rec, g_logvar) = jax.value_and_grad(
    nll_fn, argnums=(0, 1), has_aux=True
  )(rec, ls['logvar'])
  metrics = {
    'nll_loss': nll,
    'rec_loss': rec_mean,
    'p_loss': p_mean,
    'logvar': ls['logvar'],
    ('kl_loss' if loss.kind == 'kl' else 'codebook_loss'): reg,
    **stats,
  }
  total = nll + loss.reg_weight * reg
  disc_vars = disc_factor = None
  if loss.disc is not None:
    disc_factor = adopt_weight(L.disc_factor, state.step, L.disc_start)

    def g_fn(r):
      logits, variables = apply_disc(loss.disc, ls['disc'], r)
      return -jnp.mean(logits), variables

    (g_loss, disc_vars), g_rec_adv = jax.value_and_grad(g_fn, has_aux=True)(rec)
    at_last = _grad_at_last_conv(state.params, last_in)
    d_weight = (
      adaptive_weight(at_last(g_rec), at_last(g_rec_adv), L.disc_weight)
      if (L.disc_factor > 0 or loss.kind == 'vq')
      else jnp.zeros(())
    )
    g_rec = g_rec + (d_weight * disc_factor) * g_rec_adv
    total = total + d_weight * disc_factor * g_loss
    metrics.update(g_loss=g_loss, d_weight=d_weight, disc_factor=disc_factor)
  (grads,) = pullback((g_rec.astype(rec.dtype), jnp.asarray(loss.reg_weight, reg.dtype)))
  state, extra = apply_gradients(state, grads, loss.tx, loss.config)
  metrics.update(loss=total, **extra)
  if loss.tx_logvar is not None:  # first_stage_loss.train_logvar: what the reference meant to do
    new_ls = dict(ls)
    upd, new_ls['logvar_opt_state'] = loss.tx_logvar.update(
      g_logvar, ls['logvar_opt_state'], ls['logvar']
    )
    new_ls['logvar'] = optax.apply_updates(ls['logvar'], upd)
    state = state.replace(loss_state=new_ls)
  return state, metrics, rec, disc_vars, disc_factor


def discriminator_update(
  loss: AutoencoderLoss, state: TrainState, x, rec_d, disc_vars, disc_factor
):
  """The discriminator's update on real ``x`` and reconstructions ``rec_d``: (state, metrics)."""
  ls = state.loss_state
  d_loss_fn = D_LOSSES[loss.config.first_stage_loss.disc_loss]
  rec_d = jax.lax.stop_gradient(rec_d)

  def d_fn(dparams):
    variables = {**disc_vars, 'params': dparams}
    logits_real, variables = apply_disc(loss.disc, variables, x)
    logits_fake, variables = apply_disc(loss.disc, variables, rec_d)
    d_loss = disc_factor * d_loss_fn(logits_real, logits_fake)
    return d_loss, (variables, jnp.mean(logits_real), jnp.mean(logits_fake))

  (d_loss, (variables, lr_mean, lf_mean)), d_grads = jax.value_and_grad(d_fn, has_aux=True)(
    disc_vars['params']
  )
  new_ls = dict(ls)
  upd, new_ls['disc_opt_state'] = loss.tx_disc.update(
    d_grads, ls['disc_opt_state'], variables['params']
  )
  new_ls['disc'] = {**variables, 'params': optax.apply_updates(variables['params'], upd)}
  metrics = {
    'disc_loss': d_loss,
    'logits_real': lr_mean,
    'logits_fake': lf_mean,
    'disc_grad_norm': optax.tree.norm(d_grads),
  }
  return state.replace(loss_state=new_ls), metrics


def make_autoencoder_step(
  model, tx, config, disc=None, tx_disc=None, lpips_fn=None, tx_logvar=None
):
  """step(state, batch, frozen) -> (state, metrics): the generator update, then (with a
  discriminator) the discriminator update."""
  loss = AutoencoderLoss(model, tx, config, disc, tx_disc, lpips_fn, tx_logvar)

  def step(state: TrainState, batch, frozen=None):
    k_post, k_drop, k_post2, k_drop2 = jax.random.split(step_key(config, state.step), 4)
    x = batch['image']
    state, metrics, rec, disc_vars, disc_factor = generator_update(
      loss, state, x, (k_post, k_drop), frozen
    )
    if disc is not None:
      if config.first_stage_loss.disc_on_updated_reconstructions:
        (rec, _), _ = forward(loss, state.params, x, k_post2, k_drop2, False)
      state, d_metrics = discriminator_update(loss, state, x, rec, disc_vars, disc_factor)
      metrics.update(d_metrics)
    return state, metrics

  return step
