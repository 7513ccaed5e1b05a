"""The train state (one pytree, replicated or sharded by the mesh) and the optimiser."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ldm_jax.config import learning_rate


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: number of optimizer updates done
  params: Any
  opt_state: Any
  ema_params: Any  # None when training.use_ema is False
  scale_factor: jax.Array  # float32 scalar; LDM latents are multiplied by it (1 for autoencoders)
  # Autoencoder runs: the loss's own state (see ``init_loss_state``); None for LDM runs.
  loss_state: Any = None

  @classmethod
  def create(
    cls,
    params,
    tx: optax.GradientTransformation,
    use_ema: bool,
    scale_factor: float,
    loss_state=None,
  ):
    return cls(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
      scale_factor=jnp.asarray(scale_factor, jnp.float32),
      loss_state=loss_state,
    )


def init_loss_state(config, key, disc=None, disc_input=None, tx_disc=None, tx_logvar=None) -> dict:
  """The first-stage loss's state: ``logvar`` (the reference's scalar, trained only with
  first_stage_loss.train_logvar and then with its own Adam), and the discriminator's variables
  (params + BatchNorm statistics) and optimizer state when it is used. ``disc_input`` is a batch of
  images; with ActNorm its statistics initialise the norms (the reference: the first batch D sees)."""
  state = {'logvar': jnp.asarray(config.first_stage_loss.logvar_init, jnp.float32)}
  if tx_logvar is not None:
    state['logvar_opt_state'] = tx_logvar.init(state['logvar'])
  if disc is not None:
    variables = dict(disc.init(key, disc_input))
    state['disc'] = variables
    state['disc_opt_state'] = tx_disc.init(variables['params'])
  return state


def lr_schedule(config):
  """Linear warm-up over ``warmup_steps`` (the first update already uses lr/warmup), then
  config.optimizer.schedule: 'constant', or 'cosine' / 'linear' decay from lr to
  ``end_learning_rate`` at training.num_steps (optax's cosine_decay_schedule /
  linear_schedule, started after the warm-up)."""
  o = config.optimizer
  lr, warmup = learning_rate(config), o.warmup_steps
  kind, end = o.get('schedule', 'constant'), o.get('end_learning_rate', 0.0)
  decay_steps = max(1, config.training.num_steps - max(warmup, 0))
  if kind == 'cosine':
    after = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
  elif kind == 'linear':
    after = optax.linear_schedule(lr, end, decay_steps)
  else:
    after = lambda count: jnp.full((), lr, jnp.float32)
  if warmup <= 0:
    return lambda count: jnp.asarray(after(count), jnp.float32)

  def schedule(count):
    warm = lr * jnp.minimum(1.0, (count + 1.0) / warmup)
    return jnp.where(count < warmup, warm, after(jnp.maximum(count - warmup, 0))).astype(
      jnp.float32
    )

  return schedule


def frozen_cond_stage(config) -> bool:
  """An LDM whose conditioning encoder is not trained (cond_stage.trainable False: SD's CLIP)."""
  return config.stage == 'ldm' and not config.cond_stage.get('trainable', True)


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with torch's defaults (weight decay 0.01, decoupled) or Adam; clipping is always in the
  chain (inf = off) so that the optimizer state has one structure whatever the setting. With a
  frozen conditioning encoder its parameters get no update and no optimizer state (their
  gradients are zero: the step stops them)."""
  tx = _optimizer(config)
  if not frozen_cond_stage(config):
    return tx
  labels = lambda params: {k: 'frozen' if k == 'cond_stage' else 'train' for k in params}
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)


def plain_optimizer(config) -> optax.GradientTransformation:
  """The optimizer of config.optimizer for every parameter it is given (LoRA: the adapters)."""
  return _optimizer(config)


def _optimizer(config) -> optax.GradientTransformation:
  o = config.optimizer
  clip = optax.clip_by_global_norm(o.grad_clip_norm if o.grad_clip_norm > 0 else float('inf'))
  sched = lr_schedule(config)
  if o.name == 'adamw':
    opt = optax.adamw(sched, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  elif o.name == 'adam':
    opt = optax.adam(sched, b1=o.b1, b2=o.b2, eps=o.eps)
  else:
    raise ValueError(f"config.optimizer.name must be 'adamw' or 'adam', got {o.name!r}")
  return optax.chain(clip, opt)
