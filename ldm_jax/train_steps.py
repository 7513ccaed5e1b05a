"""The training steps: pure functions (state, batch, frozen) -> (state, metrics), jitted by the
trainer over the mesh. Randomness comes from fold_in(seed, step), so a resumed run draws the same
noise as an uninterrupted one, whatever the number of devices."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldm_jax.autoencoder import AutoencoderKL
from ldm_jax.diffusion import diffusion_loss, q_sample
from ldm_jax.ema import ema_update
from ldm_jax.losses import D_LOSSES, adaptive_weight, adopt_weight, codebook_stats, nll_loss
from ldm_jax.models import LatentDiffusion, latent_shape
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


def make_autoencoder_step(model, tx, config, disc=None, tx_disc=None, lpips_fn=None,
                          tx_logvar=None):
  """The first stage's training step, generator and discriminator in one jitted function.

  Generator: L1 (+ LPIPS) reconstruction, KL or codebook regulariser, adversarial term with the
  reference's adaptive weight (see ``losses``). The AE forward runs once under ``jax.vjp``; the
  gradients of the reconstruction loss and of the adversarial loss w.r.t. the reconstruction are
  taken separately, their norms at the decoder's last conv weight give d_weight, and their weighted
  sum is pulled back through the autoencoder once. Then the discriminator is updated, as the
  reference's second optimizer step, on reconstructions of the updated autoencoder (a fresh forward;
  ``disc_on_updated_reconstructions=False`` reuses the generator pass's instead, one forward less).
  ``frozen`` (the step's third argument) holds the LPIPS parameters, or None without LPIPS.
  """
  L = config.first_stage_loss
  kind = 'kl' if isinstance(model, AutoencoderKL) else 'vq'
  reg_weight = L.kl_weight if kind == 'kl' else L.codebook_weight
  use_lpips = lpips_fn is not None and L.perceptual_weight > 0
  d_loss_fn = D_LOSSES[L.disc_loss]

  def forward(params, x, key, k_drop, collect_last_input):
    kwargs = dict(train=True, rngs={'dropout': k_drop})
    if collect_last_input:
      out, inter = model.apply({'params': params}, x, key, mutable=['intermediates'], **kwargs)
      last_in = inter['intermediates']['decoder']['pre_conv_out'][0]
    else:
      out, last_in = model.apply({'params': params}, x, key, **kwargs), None
    if kind == 'kl':
      rec, posterior = out
      return (rec, jnp.sum(posterior.kl()) / x.shape[0]), (last_in, {})
    rec, codebook_loss, indices = out
    return (rec, codebook_loss), (last_in, codebook_stats(indices, config.first_stage.n_embed))

  def apply_disc(variables, images):
    """D logits in training mode (batch statistics); returns updated norm statistics too."""
    extra = [k for k in variables if k != 'params']
    if not extra:
      return disc.apply(variables, images, train=True), variables
    logits, updates = disc.apply(variables, images, train=True, mutable=extra)
    return logits, {**variables, **updates}

  def step(state: TrainState, batch, frozen=None):
    k_post, k_drop, k_post2, k_drop2 = jax.random.split(step_key(config, state.step), 4)
    x = batch['image']
    ls = state.loss_state
    (rec, reg), pullback, (last_in, stats) = jax.vjp(
        lambda p: forward(p, x, k_post, k_drop, disc is not None), state.params, has_aux=True)

    def nll_fn(r, logvar):
      p = lpips_fn(frozen, x, r) if use_lpips else None
      nll, rec_mean = nll_loss(x, r, p, L.perceptual_weight, logvar, kind)
      return nll, (rec_mean, jnp.mean(p) if p is not None else jnp.zeros(()))

    (nll, (rec_mean, p_mean)), (g_rec, g_logvar) = jax.value_and_grad(
        nll_fn, argnums=(0, 1), has_aux=True)(rec, ls['logvar'])
    metrics = {'nll_loss': nll, 'rec_loss': rec_mean, 'p_loss': p_mean, 'logvar': ls['logvar'],
               ('kl_loss' if kind == 'kl' else 'codebook_loss'): reg, **stats}
    total = nll + reg_weight * reg
    new_ls = dict(ls)
    if disc is not None:
      disc_factor = adopt_weight(L.disc_factor, state.step, L.disc_start)

      def g_fn(r):
        logits, variables = apply_disc(ls['disc'], r)
        return -jnp.mean(logits), variables

      (g_loss, disc_vars), g_rec_adv = jax.value_and_grad(g_fn, has_aux=True)(rec)
      # d(loss)/d(conv_out.weight) from d(loss)/d(rec): a vjp of the last conv alone.
      kernel = state.params['decoder']['conv_out']['kernel']
      conv = lambda w: jax.lax.conv_general_dilated(
          last_in, w.astype(last_in.dtype), (1, 1), ((1, 1), (1, 1)),
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      _, conv_vjp = jax.vjp(conv, kernel)
      grad_at_last = lambda g: conv_vjp(g.astype(last_in.dtype))[0]
      d_weight = (adaptive_weight(grad_at_last(g_rec), grad_at_last(g_rec_adv), L.disc_weight)
                  if (L.disc_factor > 0 or kind == 'vq') else jnp.zeros(()))
      g_rec = g_rec + (d_weight * disc_factor) * g_rec_adv
      total = total + d_weight * disc_factor * g_loss
      metrics.update(g_loss=g_loss, d_weight=d_weight, disc_factor=disc_factor)
    (grads,) = pullback((g_rec.astype(rec.dtype), jnp.asarray(reg_weight, reg.dtype)))
    state, extra = _apply_gradients(state, grads, tx, config)
    metrics.update(loss=total, **extra)

    if tx_logvar is not None:  # first_stage_loss.train_logvar: what the reference meant to do
      upd, new_ls['logvar_opt_state'] = tx_logvar.update(g_logvar, ls['logvar_opt_state'],
                                                         ls['logvar'])
      new_ls['logvar'] = optax.apply_updates(ls['logvar'], upd)

    if disc is not None:
      if L.disc_on_updated_reconstructions:
        (rec_d, _), _ = forward(state.params, x, k_post2, k_drop2, False)
      else:
        rec_d = rec
      rec_d = jax.lax.stop_gradient(rec_d)

      def d_fn(dparams):
        variables = {**disc_vars, 'params': dparams}
        logits_real, variables = apply_disc(variables, x)
        logits_fake, variables = apply_disc(variables, rec_d)
        d_loss = disc_factor * d_loss_fn(logits_real, logits_fake)
        return d_loss, (variables, jnp.mean(logits_real), jnp.mean(logits_fake))

      (d_loss, (disc_vars, lr_mean, lf_mean)), d_grads = jax.value_and_grad(d_fn, has_aux=True)(
          disc_vars['params'])
      upd, new_ls['disc_opt_state'] = tx_disc.update(d_grads, ls['disc_opt_state'],
                                                     disc_vars['params'])
      new_ls['disc'] = {**disc_vars, 'params': optax.apply_updates(disc_vars['params'], upd)}
      metrics.update(disc_loss=d_loss, logits_real=lr_mean, logits_fake=lf_mean,
                     disc_grad_norm=optax.tree.norm(d_grads))
    return state.replace(loss_state=new_ls), metrics

  return step


def drop_condition(drop, cond, null):
  """Classifier-free guidance training: replace the condition of each example where ``drop`` [B]
  is True by ``null`` (the null class, the empty prompt's tokens, the empty layout; one example,
  no batch axis)."""
  return jnp.where(drop.reshape((-1,) + (1,) * (cond.ndim - 1)), jnp.asarray(null, cond.dtype), cond)


def micro_batches(tree, k: int):
  """Split every leaf's batch axis into ``k`` micro-batches [k, B/k, ...]; micro-batch i holds
  examples i, i+k, i+2k, ... so that each stays spread evenly over the devices the batch is
  sharded on (contiguous rows per device)."""
  return jax.tree.map(
      lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1), tree)


def make_ldm_step(ldm: LatentDiffusion, tx, config):
  """LatentDiffusion.p_losses on first-stage latents of the batch (first stage frozen). A
  conditional batch holds its raw condition under 'cond'.

  Every random draw of an example (posterior sample, t, noise, condition dropout) comes from its
  own key, split from fold_in(seed, step) by its index in the global batch, so the step's result
  does not depend on how the batch is split: over devices, or into ``grad_accum_steps``
  micro-batches whose gradients are averaged in a scan (a global batch larger than memory).
  With compute_dtype 'bfloat16' the model computes in bf16 (``ldm`` built so); latents, losses,
  gradients and parameters stay fp32."""
  d, cs, t_cfg = config.diffusion, config.cond_stage, config.training
  accum = t_cfg.grad_accum_steps
  conditional = cs.kind != 'none'
  null = None
  if conditional and cs.p_uncond > 0:
    from ldm_jax.tasks import null_condition  # class or bert (validate): one null example
    null = null_condition(config, np.zeros(1))[0]
  shape = latent_shape(config)

  def example_draws(key, n):
    def one(k):
      k_post, k_t, k_noise, k_uncond = jax.random.split(k, 4)
      return {'post': jax.random.normal(k_post, shape), 'noise': jax.random.normal(k_noise, shape),
              't': jax.random.randint(k_t, (), 0, d.timesteps),
              'drop': jax.random.uniform(k_uncond) < cs.p_uncond}
    return jax.vmap(one)(jax.random.split(key, n))

  def grads_and_metrics(params, batch, draws, k_drop, first_stage_params, scale_factor):
    z0 = ldm.latents_from_batch(first_stage_params, batch, noise=draws['post'])
    z0 = jax.lax.stop_gradient(z0) * scale_factor
    labels = None
    if conditional:
      # 'cond': the raw condition (data pipeline); class batches may give just their 'label'
      labels = batch['cond'] if 'cond' in batch or cs.kind != 'class' else batch['label']
      if null is not None:
        labels = drop_condition(draws['drop'], labels, null)
    t, noise = draws['t'], draws['noise']
    x_t = q_sample(ldm.schedule, z0, t, noise)

    def loss_fn(p):
      c = ldm.conditioning(p, first_stage_params, labels)  # inside: the encoder is trained
      out = ldm.model_output(p, x_t, t, c, dropout_key=k_drop).astype(jnp.float32)
      return diffusion_loss(ldm.schedule, out, z0, noise, t, parameterization=d.parameterization,
                            loss_type=d.loss_type, l_simple_weight=d.l_simple_weight,
                            original_elbo_weight=d.original_elbo_weight)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, metrics

  def step(state: TrainState, batch, first_stage_params):
    k_examples, k_drop = jax.random.split(step_key(config, state.step))
    n = jax.tree.leaves(batch)[0].shape[0]
    draws = example_draws(k_examples, n)
    fn = lambda b, dr, kd: grads_and_metrics(state.params, b, dr, kd, first_stage_params,
                                             state.scale_factor)
    if accum == 1:
      grads, metrics = fn(batch, draws, k_drop)
    else:
      def body(total, xs):
        i, (b, dr) = xs
        out = fn(b, dr, jax.random.fold_in(k_drop, i))
        return jax.tree.map(jnp.add, total, out), None

      zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(
          fn, *jax.tree.map(lambda x: x[0], micro_batches((batch, draws), accum)), k_drop))
      total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro_batches((batch, draws),
                                                                             accum)))
      grads, metrics = jax.tree.map(lambda x: x / accum, total)
    state, extra = _apply_gradients(state, grads, tx, config)
    return state, {**metrics, **extra}

  return step


def guard_nonfinite(step_fn):
  """Wrap a step: when any float metric (loss, gradient norms) is NaN/Inf the update is skipped
  (parameters, EMA, optimizer and loss state keep their values; the step counter advances, the
  batch is consumed) and metrics['nonfinite'] is 1. The trainer counts and stops after
  config.training.max_nonfinite_steps in a row."""
  def guarded(state: TrainState, batch, frozen):
    new, metrics = step_fn(state, batch, frozen)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)
                            if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)]))
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state).replace(step=new.step)
    return kept, {**metrics, 'nonfinite': 1.0 - ok.astype(jnp.float32)}
  return guarded


def latent_std(ldm: LatentDiffusion, first_stage_params, batch, key):
  """std over all elements of the first batch's (sampled) latents; scale_factor = 1 / this
  (the reference's scale_by_std, paper appendix D.1/G)."""
  return jnp.std(ldm.latents_from_batch(first_stage_params, batch, key).astype(jnp.float32))
