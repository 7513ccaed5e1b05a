"""Gaussian diffusion math as pure functions (reference: DDPM / LatentDiffusion in ddpm.py).

Timesteps are 0-indexed integers in [0, T); arrays are NHWC; ``schedule`` is a ``Schedule``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.schedule import Schedule


def extract(a: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """a[t] reshaped to [B, 1, ..., 1] for broadcasting against an ``ndim`` array. A fractional t
  (the Euler and Heun samplers' noise levels) interpolates linearly between timesteps."""
  if jnp.issubdtype(t.dtype, jnp.floating):
    value = jnp.interp(t, jnp.arange(a.shape[0], dtype=t.dtype), a)
  else:
    value = a[t]
  return value.reshape((t.shape[0],) + (1,) * (ndim - 1))


def q_sample(s: Schedule, x0, t, noise):
  """Sample x_t ~ q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
  return (
    extract(s.sqrt_alphas_cumprod, t, x0.ndim) * x0
    + extract(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
  )


def predict_start_from_noise(s: Schedule, x_t, t, eps):
  return (
    extract(s.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
    - extract(s.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
  )


def predict_noise_from_start(s: Schedule, x_t, t, x0):
  return (extract(s.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0) / extract(
    s.sqrt_recipm1_alphas_cumprod, t, x_t.ndim
  )


def q_posterior(s: Schedule, x0, x_t, t):
  """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
  mean = (
    extract(s.posterior_mean_coef1, t, x_t.ndim) * x0
    + extract(s.posterior_mean_coef2, t, x_t.ndim) * x_t
  )
  return (
    mean,
    extract(s.posterior_variance, t, x_t.ndim),
    extract(s.posterior_log_variance_clipped, t, x_t.ndim),
  )


def velocity(s: Schedule, x0, noise, t):
  """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022), the target of a
  v-parameterised model (Stable Diffusion 2's 768-v models; SD 2's ddpm.py ``get_v``)."""
  return (
    extract(s.sqrt_alphas_cumprod, t, x0.ndim) * noise
    - extract(s.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0
  )


def model_output_to_eps(s: Schedule, parameterization: str, x_t, t, out):
  """The samplers work with eps; an x0- or v-parameterised model's output is converted
  (v: eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, SD 2's ``predict_eps_from_z_and_v``)."""
  if parameterization == 'eps':
    return out
  if parameterization == 'x0':
    return predict_noise_from_start(s, x_t, t, out)
  if parameterization == 'v':
    return (
      extract(s.sqrt_alphas_cumprod, t, x_t.ndim) * out
      + extract(s.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t
    )
  raise ValueError(f"parameterization must be 'eps', 'x0' or 'v', got {parameterization!r}")


def per_sample_loss(pred, target, loss_type: str):
  """``loss_simple``: mean over all but the batch axis of |pred-target| (l1) or (pred-target)^2 (l2)."""
  diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
  if loss_type == 'l1':
    err = jnp.abs(diff)
  elif loss_type == 'l2':
    err = diff**2
  else:
    raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
  return jnp.mean(err, axis=tuple(range(1, err.ndim)))


@dataclasses.dataclass(frozen=True)
class LossSpec:
  """The training objective of config.diffusion: what the UNet predicts (``parameterization``:
  'eps', 'x0' or 'v'), ``loss_type`` ('l1', 'l2'), the weights of the simple and the VLB terms,
  and the recipes of README "Training recipes"."""

  parameterization: str = 'eps'
  loss_type: str = 'l2'
  l_simple_weight: float = 1.0
  original_elbo_weight: float = 0.0
  snr_gamma: float = 0.0  # Min-SNR-gamma weighting of each example's simple loss (0 = off)
  # The noise (the trainer's, before the loss): offset noise and input perturbation (0 = off)
  noise_offset: float = 0.0
  input_perturbation: float = 0.0

  @classmethod
  def from_config(cls, d) -> LossSpec:
    """From config.diffusion."""
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def diffusion_loss(
  s: Schedule, model_out, x0, noise, t, spec: LossSpec | None = None, example_weight=None,
  **fields,
):  # fmt: skip
  """LatentDiffusion.p_losses with logvar = 0 (learn_logvar False in every config):
  loss = l_simple_weight * mean(w_t * loss_simple) + original_elbo_weight * mean(lvlb_weights[t] *
  loss_simple), w_t = 1, or ``min_snr_weight`` with ``snr_gamma``, times ``example_weight`` [B]
  where given (DreamBooth's prior preservation). ``spec`` (default LossSpec()) or its fields as
  keywords. Returns (loss, metrics)."""
  spec = dataclasses.replace(spec or LossSpec(), **fields)
  parameterization = spec.parameterization
  targets = {'eps': lambda: noise, 'x0': lambda: x0, 'v': lambda: velocity(s, x0, noise, t)}
  if parameterization not in targets:
    raise ValueError(f"parameterization must be 'eps', 'x0' or 'v', got {parameterization!r}")
  target = targets[parameterization]()
  loss_simple = per_sample_loss(model_out, target, spec.loss_type)
  loss_vlb = jnp.mean(s.lvlb_weights[t] * loss_simple)
  weighted = loss_simple
  if spec.snr_gamma > 0:
    weighted = min_snr_weight(s, t, spec.snr_gamma, parameterization) * loss_simple
  if example_weight is not None:
    weighted = weighted * example_weight
  loss = spec.l_simple_weight * jnp.mean(weighted) + spec.original_elbo_weight * loss_vlb
  return loss, {'loss_simple': jnp.mean(loss_simple), 'loss_vlb': loss_vlb, 'loss': loss}


def snr(s: Schedule, t) -> jax.Array:
  """Signal-to-noise ratio abar_t / (1 - abar_t) (diffusers' ``compute_snr``)."""
  abar = s.alphas_cumprod[t]
  return abar / (1.0 - abar)


def min_snr_weight(s: Schedule, t, gamma: float, parameterization: str) -> jax.Array:
  """Min-SNR-gamma (Hang et al. 2023) per-example loss weights: min(SNR, gamma) / SNR for eps
  prediction, min(SNR, gamma) / (SNR + 1) for v (as diffusers' training scripts), min(SNR,
  gamma) for x0 (the paper's)."""
  ratio = snr(s, t)
  clipped = jnp.minimum(ratio, gamma)
  if parameterization == 'eps':
    return clipped / ratio
  if parameterization == 'v':
    return clipped / (ratio + 1.0)
  return clipped
