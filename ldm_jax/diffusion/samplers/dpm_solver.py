"""DPM-Solver++ (Lu et al. 2022): multistep, data prediction, orders 2 and 3, and the 2M SDE
variant, as diffusers' DPMSolverMultistepScheduler (algorithm_type 'dpmsolver++' or
'sde-dpmsolver++', solver_type 'midpoint', lower_order_final, final sigma 0, 'linspace' spacing by
default). Every update is linear in x, the last three data predictions and the noise, with
coefficients that depend only on the grid: they are computed once in numpy (float64) and the
jitted loop is one ``lax.scan`` with one model call per step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.samplers.ddim import EpsFn, run_steps
from ldm_jax.diffusion.samplers.grids import (
  karras_sigmas,
  sigma_to_t,
  spaced_timesteps,
  train_sigmas,
)
from ldm_jax.diffusion.schedule import Schedule
from ldm_jax.errors import UserError


def dpm_grid(schedule: Schedule, num_steps: int, spacing: str = 'linspace', karras: bool = False):
  """(timesteps [S] (int, where the model is called), sigmas [S + 1] ending at 0)."""
  T = schedule.num_timesteps
  sig = train_sigmas(jax.device_get(schedule.alphas_cumprod))
  timesteps = spaced_timesteps(spacing, num_steps, T, extra_last=True)
  if karras:
    sigmas = karras_sigmas(sig[-1], sig[0], num_steps)
    timesteps = sigma_to_t(sigmas, np.log(sig)).round()
  else:
    sigmas = np.interp(timesteps, np.arange(T), sig)
  sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32).astype(np.float64)
  return timesteps.astype(np.int64), sigmas


def _alpha_sigma(sigma):
  alpha = 1.0 / np.sqrt(sigma**2 + 1.0)
  return alpha, sigma * alpha


def _lam(sigma):
  """log(alpha / sigma) of the variance-preserving pair at noise level ``sigma``."""
  alpha, s = _alpha_sigma(sigma)
  return np.log(alpha) - np.log(s)


def dpm_coefficients(sigmas: np.ndarray, order: int, sde: bool, lower_order_final: bool = True):
  """[S, 5] per step: x_next = c[0] x + c[1] m0 + c[2] m1 + c[3] m2 + c[4] noise (m0: the newest
  data prediction), and the order each step uses."""
  S = len(sigmas) - 1
  out, orders = np.zeros((S, 5)), []
  with np.errstate(divide='ignore', invalid='ignore'):
    for i in range(S):
      final = i == S - 1  # the last step goes to sigma 0: first order (diffusers' rule)
      second = i == S - 2 and lower_order_final and S < 15
      o = 1 if order == 1 or i < 1 or final else 2 if order == 2 or i < 2 or second else 3
      orders.append(o)
      a_t, s_t = _alpha_sigma(sigmas[i + 1])
      h = _lam(sigmas[i + 1]) - _lam(sigmas[i])
      _, s_s0 = _alpha_sigma(sigmas[i])
      if sde:
        cx, A = s_t / s_s0 * np.exp(-h), a_t * (1 - np.exp(-2 * h))
        B0, B1 = A, a_t * ((1 - np.exp(-2 * h)) / (-2 * h) + 1)
        B2 = a_t * ((1 - np.exp(-2 * h) - 2 * h) / (2 * h) ** 2 - 0.5)
        cn = s_t * np.sqrt(1 - np.exp(-2 * h))
        mid = 0.5 * A  # the midpoint rule's D1 weight
      else:
        cx, B0 = s_t / s_s0, -a_t * (np.exp(-h) - 1)
        B1 = a_t * ((np.exp(-h) - 1) / h + 1)
        B2 = -a_t * ((np.exp(-h) - 1 + h) / h**2 - 0.5)
        cn, mid = 0.0, 0.5 * B0
      if final:  # sigma_t = 0: exp(-h) = 0 exactly (h = inf)
        cx, B0, cn = 0.0, a_t, 0.0
      m = np.zeros(3)
      m[0] = B0
      if o >= 2:
        r0 = (_lam(sigmas[i]) - _lam(sigmas[i - 1])) / h
        d1_0 = np.array([1.0, -1.0, 0.0]) / r0
        if o == 2:
          m += mid * d1_0
        else:
          r1 = (_lam(sigmas[i - 1]) - _lam(sigmas[i - 2])) / h
          d1_1 = np.array([0.0, 1.0, -1.0]) / r1
          d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
          d2 = (d1_0 - d1_1) / (r0 + r1)
          m += B1 * d1 + B2 * d2
      out[i] = [cx, *m, cn]
  return out, orders


def dpm_solver_sample(
  eps_fn: EpsFn,
  x_T: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  num_steps: int,
  eta: float = 0.0,
  order: int = 2,
  sde: bool = False,
  spacing: str = 'linspace',
  karras: bool = False,
  start: int = 0,
  stop: int | None = None,
) -> jax.Array:
  """DPM-Solver++(``order``M) from x_T (variance preserving, as the other samplers) in
  ``num_steps`` model calls; ``sde``: the stochastic 2M variant (noise from ``key``). ``start``:
  from the grid's step ``start`` (first order there, as a fresh multistep run), x_T being at its
  noise level (image-to-image). ``stop``: end before grid step ``stop`` (its noise level; diffusers' denoising_end)."""
  del eta  # (the sampler signature; the SDE variant sets its own noise)
  if order not in (1, 2, 3):
    raise UserError(f'DPM-Solver++ order must be 1, 2 or 3, got {order}')
  timesteps, sigmas = dpm_grid(schedule, num_steps, spacing, karras)
  timesteps, sigmas = timesteps[start:], sigmas[start:]
  coef, _ = dpm_coefficients(sigmas, order, sde)
  alpha, sig_vp = _alpha_sigma(sigmas[:-1])
  batch = x_T.shape[0]
  keys = jax.random.split(key, len(timesteps))

  def body(carry, inputs):
    x, m1, m2 = carry
    t, a, s, c, k = inputs
    eps = eps_fn(x, jnp.full((batch,), t, jnp.int32))
    m0 = (x - s * eps) / a  # the data prediction
    noise = jax.random.normal(k, x.shape, x.dtype) if sde else jnp.zeros_like(x)
    x = c[0] * x + c[1] * m0 + c[2] * m1 + c[3] * m2 + c[4] * noise
    return (x, m0, m1), None

  f32 = lambda a: jnp.asarray(a, jnp.float32)
  xs = (jnp.asarray(timesteps, jnp.int32), f32(alpha), f32(sig_vp), f32(coef), keys)
  zeros = jnp.zeros_like(x_T)
  (x, _, _), _ = jax.lax.scan(body, (x_T, zeros, zeros), run_steps(xs, start, stop))
  return x
