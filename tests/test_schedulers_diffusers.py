"""DDIM and DDPM trajectories equal diffusers' schedulers configured like the reference:

  DDIMScheduler(beta_schedule='scaled_linear', beta_start=0.0015, beta_end=0.0195,
                clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                timestep_spacing='leading')      # the reference grid range(0, T, T//S) + 1,
                                                 # the last step to abar[0]
  DDPMScheduler(same betas, variance_type='fixed_small', clip_sample=False)

('scaled_linear' is the reference's 'linear', linear in sqrt(beta).) The same model function and
the same per-step noise drive both. diffusers accumulates alphas_cumprod in float32, the
reference in float64; the difference is measured and then both run on the reference's values,
so that the comparison is of the algorithms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion.samplers import ddim_sample, ddpm_sample
from tests.test_samplers import S, eps_jax, eps_np, x_T

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

BETAS = dict(
  beta_start=0.0015,
  beta_end=0.0195,
  beta_schedule='scaled_linear',
  num_train_timesteps=1000,
  clip_sample=False,
)


def _reference_alphas(sched):
  sched.alphas_cumprod = torch.from_numpy(np.asarray(S.alphas_cumprod, np.float64)).float()
  sched.final_alpha_cumprod = sched.alphas_cumprod[0]
  return sched


def _close(ours, ref, tol=1e-5):
  """Max abs error relative to the trajectory's scale (the toy model's x_0 reach ~400; float32)."""
  err = float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))
  assert err < tol, err


def _run(sched, x, noises=None, **step_kw):
  x = torch.from_numpy(x)
  for i, t in enumerate(sched.timesteps):
    eps = torch.from_numpy(eps_np(x.numpy().astype(np.float64), int(t)).astype(np.float32))
    kw = dict(step_kw)
    if noises is not None:
      kw['variance_noise'] = torch.from_numpy(np.array(noises[i]))
    x = sched.step(eps, t, x, **kw).prev_sample
  return x.numpy()


def test_diffusers_schedule_is_the_reference_linear_schedule():
  sched = diffusers.DDIMScheduler(**BETAS)
  np.testing.assert_allclose(sched.betas.numpy(), np.asarray(S.betas), rtol=1e-6)
  # float32 cumprod vs float64: relative differences of a few 1e-6 at most.
  err = np.max(np.abs(sched.alphas_cumprod.numpy() / np.asarray(S.alphas_cumprod) - 1))
  assert err < 2e-5


@pytest.mark.parametrize('steps', [10, 50])
def test_ddim_eta0_trajectory_matches_diffusers(steps):
  sched = _reference_alphas(
    diffusers.DDIMScheduler(
      set_alpha_to_one=False, steps_offset=1, timestep_spacing='leading', **BETAS
    )
  )
  sched.set_timesteps(steps)
  ours = ddim_sample(eps_jax, jnp.asarray(x_T()), jax.random.PRNGKey(0), S, steps, eta=0.0)
  np.testing.assert_array_equal(
    sched.timesteps.numpy()[::-1], np.arange(0, 1000, 1000 // steps) + 1
  )
  ref = _run(sched, x_T(), eta=0.0)
  _close(ours, ref)


def test_ddim_eta1_trajectory_matches_diffusers_with_the_same_noise():
  steps = 20
  key = jax.random.PRNGKey(3)
  x = x_T()
  # ddim_sample draws step i's noise from split(key, n)[i] (i = 0 is the first, noisiest step).
  noises = [
    np.asarray(jax.random.normal(k, x.shape, jnp.float32)) for k in jax.random.split(key, steps)
  ]
  sched = _reference_alphas(
    diffusers.DDIMScheduler(
      set_alpha_to_one=False, steps_offset=1, timestep_spacing='leading', **BETAS
    )
  )
  sched.set_timesteps(steps)
  ours = ddim_sample(eps_jax, jnp.asarray(x), key, S, steps, eta=1.0)
  ref = _run(sched, x, noises, eta=1.0)
  _close(ours, ref)


def test_ddpm_trajectory_matches_diffusers_with_the_same_noise(monkeypatch):
  key = jax.random.PRNGKey(4)
  x = x_T()
  noises = list(
    np.asarray(
      jax.vmap(lambda k: jax.random.normal(k, x.shape, jnp.float32))(jax.random.split(key, 1000))
    )
  )
  import diffusers.schedulers.scheduling_ddpm as ddpm_module

  queue = iter(noises)
  monkeypatch.setattr(
    ddpm_module, 'randn_tensor', lambda shape, **kw: torch.from_numpy(np.array(next(queue)))
  )
  sched = _reference_alphas(diffusers.DDPMScheduler(variance_type='fixed_small', **BETAS))
  sched.set_timesteps(1000)
  # Step i (t = 999 - i) uses noises[i] in both; diffusers draws none at t = 0, ours multiplies by 0.
  ours = ddpm_sample(eps_jax, jnp.asarray(x), key, S)
  ref = _run(sched, x)
  _close(ours, ref)
