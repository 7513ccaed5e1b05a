"""Exponential moving average of parameters (reference: ldm/modules/ema.py LitEma)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_decay(num_updates, max_decay: float = 0.9999):
  """The reference warm-up: min(max_decay, (1 + n) / (10 + n)), n counted after the increment."""
  n = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(max_decay, (1.0 + n) / (10.0 + n))


def ema_update(ema_params, params, num_updates, max_decay: float = 0.9999):
  """shadow -= (1 - d) * (shadow - param) with d = ema_decay(num_updates)."""
  d = ema_decay(num_updates, max_decay)
  return jax.tree.map(lambda e, p: e - (1.0 - d) * (e - p), ema_params, params)
