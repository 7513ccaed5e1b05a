"""Noise schedules and the buffers the reference registers (ldm/models/diffusion/ddpm.py
``register_schedule``): computed in float64 with numpy, stored as float32, as the reference does."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ('linear', 'cosine', 'sqrt_linear', 'sqrt')


def make_beta_schedule(
  schedule: str,
  n_timestep: int,
  linear_start: float = 1e-4,
  linear_end: float = 2e-2,
  cosine_s: float = 8e-3,
) -> np.ndarray:
  """float64 betas. Note the reference's names: 'linear' is linear in sqrt(beta) (then squared),
  'sqrt_linear' is linear in beta, 'sqrt' is the square root of a linear ramp."""
  if schedule == 'linear':
    return np.linspace(linear_start**0.5, linear_end**0.5, n_timestep, dtype=np.float64) ** 2
  if schedule == 'cosine':
    steps = np.arange(n_timestep + 1, dtype=np.float64) / n_timestep + cosine_s
    alphas = np.cos(steps / (1 + cosine_s) * np.pi / 2) ** 2
    alphas = alphas / alphas[0]
    return np.clip(1 - alphas[1:] / alphas[:-1], 0.0, 0.999)
  if schedule == 'sqrt_linear':
    return np.linspace(linear_start, linear_end, n_timestep, dtype=np.float64)
  if schedule == 'sqrt':
    return np.linspace(linear_start, linear_end, n_timestep, dtype=np.float64) ** 0.5
  raise ValueError(f'unknown beta_schedule {schedule!r}; choose one of {BETA_SCHEDULES}')


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """Lin et al. (2024), "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1:
  shift and scale sqrt(abar) so that the last step has zero SNR (abar_T = 0) and the first keeps
  its value; the betas follow (diffusers' ``rescale_zero_terminal_snr``)."""
  abar_sqrt = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))
  first, last = abar_sqrt[0], abar_sqrt[-1]
  abar_sqrt = (abar_sqrt - last) * first / (first - last)
  abar = abar_sqrt**2
  alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
  return 1.0 - alphas


# The samplers' stand-in for a zero terminal abar (diffusers' Euler, DPM-Solver and UniPC
# schedulers set alphas_cumprod[-1] = 2**-24 when rescale_betas_zero_snr: finite sigmas).
TERMINAL_ABAR = 2.0**-24


@flax.struct.dataclass
class Schedule:
  """The twelve [T] float32 buffers of the reference, plus ``lvlb_weights`` (eps parameterisation)."""

  betas: jax.Array
  alphas_cumprod: jax.Array
  alphas_cumprod_prev: jax.Array
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  log_one_minus_alphas_cumprod: jax.Array
  sqrt_recip_alphas_cumprod: jax.Array
  sqrt_recipm1_alphas_cumprod: jax.Array
  posterior_variance: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array
  lvlb_weights: jax.Array

  @property
  def num_timesteps(self) -> int:
    return int(self.betas.shape[0])

  def for_sampling(self) -> Schedule:
    """This schedule, or with a zero terminal SNR the same with abar_T = TERMINAL_ABAR in every
    buffer the samplers read (as diffusers' schedulers do), so that sigmas and x0 stay finite."""
    abar = np.asarray(self.alphas_cumprod, np.float64)
    if abar[-1] > 0:
      return self
    a = TERMINAL_ABAR
    set_last = lambda buf, v: buf.at[-1].set(jnp.float32(v))
    return self.replace(
      alphas_cumprod=set_last(self.alphas_cumprod, a),
      sqrt_alphas_cumprod=set_last(self.sqrt_alphas_cumprod, np.sqrt(a)),
      sqrt_one_minus_alphas_cumprod=set_last(self.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - a)),
      log_one_minus_alphas_cumprod=set_last(self.log_one_minus_alphas_cumprod, np.log(1 - a)),
      sqrt_recip_alphas_cumprod=set_last(self.sqrt_recip_alphas_cumprod, np.sqrt(1 / a)),
      sqrt_recipm1_alphas_cumprod=set_last(self.sqrt_recipm1_alphas_cumprod, np.sqrt(1 / a - 1)),
    )


def make_schedule(
  beta_schedule: str = 'linear',
  timesteps: int = 1000,
  linear_start: float = 1e-4,
  linear_end: float = 2e-2,
  cosine_s: float = 8e-3,
  v_posterior: float = 0.0,
  parameterization: str = 'eps',
  zero_terminal_snr: bool = False,
) -> Schedule:
  """The reference's buffers; ``zero_terminal_snr``: the betas rescaled so that abar_T = 0
  (``rescale_zero_terminal_snr``; the buffers that divide by abar are inf there: samplers use
  ``Schedule.for_sampling``)."""
  betas = make_beta_schedule(beta_schedule, timesteps, linear_start, linear_end, cosine_s)
  if zero_terminal_snr:
    betas = rescale_zero_terminal_snr(betas)
  alphas = 1.0 - betas
  abar = np.cumprod(alphas)
  abar_prev = np.append(1.0, abar[:-1])
  post_var = (1 - v_posterior) * betas * (1 - abar_prev) / (1 - abar) + v_posterior * betas
  if parameterization == 'eps':
    with np.errstate(divide='ignore'):  # post_var[0] = 0; entry 0 is replaced below
      lvlb = betas**2 / (2 * post_var * alphas * (1 - abar))
  elif parameterization == 'x0':
    # The reference writes 0.5*sqrt(abar)/(2.*1 - abar) (operator precedence); no released model
    # trains with the vlb term (original_elbo_weight 0), so the intended 2*(1-abar) is used here.
    lvlb = 0.5 * np.sqrt(abar) / (2.0 * (1 - abar))
  elif parameterization == 'v':  # Stable Diffusion 2's ddpm.py: all ones
    lvlb = np.ones_like(betas)
  else:
    raise ValueError(f"parameterization must be 'eps', 'x0' or 'v', got {parameterization!r}")
  lvlb[0] = lvlb[1]
  f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)
  with np.errstate(divide='ignore'):  # 1 / abar_T with a zero terminal SNR: inf
    return _buffers(f32, betas, alphas, abar, abar_prev, post_var, lvlb)


def _buffers(f32, betas, alphas, abar, abar_prev, post_var, lvlb) -> Schedule:
  return Schedule(
    betas=f32(betas),
    alphas_cumprod=f32(abar),
    alphas_cumprod_prev=f32(abar_prev),
    sqrt_alphas_cumprod=f32(np.sqrt(abar)),
    sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1 - abar)),
    log_one_minus_alphas_cumprod=f32(np.log(1 - abar)),
    sqrt_recip_alphas_cumprod=f32(np.sqrt(1 / abar)),
    sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1 / abar - 1)),
    posterior_variance=f32(post_var),
    posterior_log_variance_clipped=f32(np.log(np.maximum(post_var, 1e-20))),
    posterior_mean_coef1=f32(betas * np.sqrt(abar_prev) / (1 - abar)),
    posterior_mean_coef2=f32((1 - abar_prev) * np.sqrt(alphas) / (1 - abar)),
    lvlb_weights=f32(lvlb),
  )
