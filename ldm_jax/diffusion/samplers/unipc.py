"""UniPC (Zhao et al. 2023): a multistep predictor with a corrector that reuses the next step's model
call, data prediction, B(h) = expm1(-h) ('bh2'), as diffusers' UniPCMultistepScheduler (orders
1-3, lower_order_final, final sigma 0, the DPM-Solver grid). Like DPM-Solver++, every update is
linear in x and the data predictions, so the coefficients are computed once (numpy, float64) and
the loop is one ``lax.scan`` with one model call per step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.diffusion.samplers.ddim import EpsFn, run_steps
from ldm_jax.diffusion.samplers.dpm_solver import _alpha_sigma, _lam, dpm_grid
from ldm_jax.diffusion.schedule import Schedule
from ldm_jax.errors import UserError


def _bh2(h: float, rks: np.ndarray, order: int):
  """(h_phi_1, B_h, R, b) of the bh2 variant for ``order`` with the step ratios ``rks`` (last 1)."""
  hh = -h
  h_phi_1 = np.expm1(hh)
  h_phi_k, fact, R, b = h_phi_1 / hh - 1, 1, [], []
  B_h = np.expm1(hh)
  for i in range(1, order + 1):
    R.append(rks ** (i - 1))
    b.append(h_phi_k * fact / B_h)
    fact *= i + 1
    h_phi_k = h_phi_k / hh - 1 / fact
  return h_phi_1, B_h, np.array(R), np.array(b)


def unipc_coefficients(sigmas: np.ndarray, order: int):
  """Per step i: predictor [S, 5] (x, m_i, m_{i-1}, m_{i-2}, unused) and corrector [S, 5]
  (x_last, m_{i-1}, m_{i-2}, m_{i-3}, m_i; zero at i = 0), and the orders."""
  S = len(sigmas) - 1
  orders = [min(order, S - i, i + 1) for i in range(S)]  # warm-up, lower order at the end
  pred, corr = np.zeros((S, 5)), np.zeros((S, 5))
  with np.errstate(divide='ignore', invalid='ignore'):
    for i in range(S):
      p = orders[i]
      a_t, s_t = _alpha_sigma(sigmas[i + 1])
      _, s_s0 = _alpha_sigma(sigmas[i])
      h = _lam(sigmas[i + 1]) - _lam(sigmas[i])
      rks = np.array([(_lam(sigmas[i - k]) - _lam(sigmas[i])) / h for k in range(1, p)] + [1.0])
      h_phi_1, B_h, R, b = _bh2(h, rks, p)
      if i == S - 1:  # to sigma 0 (h = inf): x = m_i exactly
        h_phi_1, s_t = -1.0, 0.0
      rhos = [] if p == 1 else [0.5] if p == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
      c = np.zeros(5)
      c[0], c[1] = s_t / s_s0, -a_t * h_phi_1
      for k, rho in enumerate(rhos, start=1):  # D1_k = (m_{i-k} - m_i) / r_k
        c[1] += a_t * B_h * rho / rks[k - 1]
        c[1 + k] -= a_t * B_h * rho / rks[k - 1]
      pred[i] = c
      if i == 0:
        continue
      q = orders[i - 1]  # the corrector of x_i has the order of the step that predicted it
      a_t, s_t = _alpha_sigma(sigmas[i])
      _, s_s0 = _alpha_sigma(sigmas[i - 1])
      h = _lam(sigmas[i]) - _lam(sigmas[i - 1])
      rks = np.array(
        [(_lam(sigmas[i - 1 - k]) - _lam(sigmas[i - 1])) / h for k in range(1, q)] + [1.0]
      )
      h_phi_1, B_h, R, b = _bh2(h, rks, q)
      rhos = np.array([0.5]) if q == 1 else np.linalg.solve(R, b)
      c = np.zeros(5)
      c[0], c[1] = s_t / s_s0, -a_t * h_phi_1
      for k in range(1, q):  # D1_k = (m_{i-1-k} - m_{i-1}) / r_k
        c[1] += a_t * B_h * rhos[k - 1] / rks[k - 1]
        c[1 + k] -= a_t * B_h * rhos[k - 1] / rks[k - 1]
      c[4] = -a_t * B_h * rhos[-1]  # D1_t = m_i - m_{i-1}
      c[1] += a_t * B_h * rhos[-1]
      corr[i] = c
  return pred, corr, orders


def unipc_sample(
  eps_fn: EpsFn,
  x_T: jax.Array,
  key: jax.Array,
  schedule: Schedule,
  num_steps: int,
  eta: float = 0.0,
  order: int = 2,
  spacing: str = 'linspace',
  karras: bool = False,
  start: int = 0,
  stop: int | None = None,
) -> jax.Array:
  """UniPC-bh2 of ``order`` from x_T in ``num_steps`` model calls (deterministic); ``start``: from
  the grid's step ``start`` (image-to-image); ``stop``: end before grid step ``stop``, with its
  predictor's output (the corrector would come with the next model call, as in diffusers)."""
  del key, eta
  if order not in (1, 2, 3):
    raise UserError(f'UniPC order must be 1, 2 or 3, got {order}')
  timesteps, sigmas = dpm_grid(schedule, num_steps, spacing, karras)
  timesteps, sigmas = timesteps[start:], sigmas[start:]
  pred, corr, _ = unipc_coefficients(sigmas, order)
  alpha, sig_vp = _alpha_sigma(sigmas[:-1])
  batch = x_T.shape[0]
  first = np.arange(len(timesteps)) == 0

  def body(carry, inputs):
    x, x_last, m1, m2, m3 = carry
    t, a, s, p, c, is_first = inputs
    eps = eps_fn(x, jnp.full((batch,), t, jnp.int32))
    m0 = (x - s * eps) / a
    corrected = c[0] * x_last + c[1] * m1 + c[2] * m2 + c[3] * m3 + c[4] * m0
    x = jnp.where(is_first, x, corrected)
    x_next = p[0] * x + p[1] * m0 + p[2] * m1 + p[3] * m2
    return (x_next, x, m0, m1, m2), None

  f32 = lambda v: jnp.asarray(v, jnp.float32)
  xs = (jnp.asarray(timesteps, jnp.int32), f32(alpha), f32(sig_vp), f32(pred), f32(corr), first)
  zeros = jnp.zeros_like(x_T)
  (x, *_), _ = jax.lax.scan(body, (x_T, zeros, zeros, zeros, zeros), run_steps(xs, start, stop))
  return x
