"""Pieces every training step shares: the per-step key, the optimizer update with EMA, and the
NaN/Inf guard. Randomness comes from fold_in(seed, step), so a resumed run draws the same noise as
an uninterrupted one, whatever the number of devices."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ldm_jax.train.ema import ema_update
from ldm_jax.train.state import TrainState, lr_schedule


def step_key(config, step):
  return jax.random.fold_in(jax.random.PRNGKey(config.seed), step)


def apply_gradients(state: TrainState, grads, tx, config):
  """One optimizer update of ``state.params`` (and its EMA); returns (state, metrics)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema is not None:
    ema = ema_update(ema, params, state.step + 1, config.training.ema_decay)
  new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema)
  return new, {'grad_norm': optax.tree.norm(grads), 'lr': lr_schedule(config)(state.step)}


def guard_nonfinite(step_fn):
  """Wrap a step: when any float metric (loss, gradient norms) is NaN/Inf the update is skipped
  (parameters, EMA, optimizer and loss state and ``state.step``, which counts applied updates, keep
  their values; the batch is consumed) and metrics['nonfinite'] is 1. The trainer counts skipped
  steps (stored with each checkpoint) and stops after config.training.max_nonfinite_steps in a
  row."""

  def guarded(state: TrainState, batch, frozen):
    new, metrics = step_fn(state, batch, frozen)
    ok = jnp.all(
      jnp.stack(
        [
          jnp.all(jnp.isfinite(v))
          for v in jax.tree.leaves(metrics)
          if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
        ]
      )
    )
    kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, state)
    return kept, {**metrics, 'nonfinite': 1.0 - ok.astype(jnp.float32)}

  return guarded
