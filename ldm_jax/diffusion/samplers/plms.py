"""PLMS, pseudo linear multi-step (reference: ldm/models/diffusion/plms.py, Liu et al. 2022).

Same grid and alphas as DDIM with eta = 0. The first step is the reference's warm-up, a pseudo
improved-Euler step with two model calls; later steps use Adams-Bashforth combinations of the
current and up to three previous raw eps. Total model calls: S + 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.samplers.ddim import EpsFn, ddim_parameters, ddim_update, make_ddim_timesteps
from ldm_jax.diffusion.schedule import Schedule
from ldm_jax.errors import UserError

# e' = c0 e + c1 e_{-1} + c2 e_{-2} + c3 e_{-3}, by the number of previous eps (1, 2, 3).
_AB_COEFFS = np.array(
  [
    [0, 0, 0, 0],
    [3 / 2, -1 / 2, 0, 0],
    [23 / 12, -16 / 12, 5 / 12, 0],
    [55 / 24, -59 / 24, 37 / 24, -9 / 24],
  ],
  np.float32,
)


def plms_sample(
  eps_fn: EpsFn,
  x_T: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  num_steps: int,
  eta: float = 0.0,
  method: str = 'uniform',
  start: int = 0,
  stop: int | None = None,
) -> jax.Array:
  """PLMS down the reference's grid from x_T; ``start``: from the grid's step ``start`` (its
  warm-up there), x_T being at that step's noise level (image-to-image); ``stop``: end before grid step ``stop`` (its noise level; diffusers' denoising_end)."""
  del key  # deterministic
  if eta != 0:
    raise UserError('PLMS is deterministic: eta must be 0 (the reference raises too)')
  timesteps = make_ddim_timesteps(num_steps, schedule.num_timesteps, method)
  a_t, a_prev, _ = (jnp.asarray(a[::-1][start:]) for a in ddim_parameters(schedule, timesteps, 0.0))
  ts = jnp.asarray(timesteps[::-1][start:].astype(np.int32))
  timesteps = timesteps[::-1][start:]
  batch, n = x_T.shape[0], len(timesteps)
  tvec = lambda t: jnp.full((batch,), t, jnp.int32)
  zero = jnp.zeros_like(x_T)

  # Warm-up: DDIM step with e, evaluate e_next at the next grid point, redo with (e + e_next) / 2.
  e0 = eps_fn(x_T, tvec(ts[0]))
  x1, _ = ddim_update(x_T, e0, a_t[0], a_prev[0], 0.0, zero)
  e_next = eps_fn(x1, tvec(ts[min(1, n - 1)]))
  x, _ = ddim_update(x_T, (e0 + e_next) / 2, a_t[0], a_prev[0], 0.0, zero)
  history = jnp.stack([e0, zero, zero])  # most recent first

  coeffs = jnp.asarray(_AB_COEFFS)

  def body(carry, i):
    x, history = carry
    e = eps_fn(x, tvec(ts[i]))
    c = coeffs[jnp.minimum(i, 3)]
    e_prime = c[0] * e + c[1] * history[0] + c[2] * history[1] + c[3] * history[2]
    x_prev, _ = ddim_update(x, e_prime, a_t[i], a_prev[i], 0.0, zero)
    return (x_prev, jnp.concatenate([e[None], history[:2]])), None

  end = n if stop is None else stop - start
  if end < 1:
    raise ValueError(f'PLMS stops at grid step {stop}: its warm-up step from {start} runs first')
  (x, _), _ = jax.lax.scan(body, (x, history), jnp.arange(1, end))
  return x
