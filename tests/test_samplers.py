"""Samplers against independent numpy re-implementations of the reference loops, with a fixed
random linear "model", plus grid, determinism and guidance checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion.samplers import (
  ddim_sample,
  ddpm_sample,
  guided_eps_fn,
  make_ddim_timesteps,
  plms_sample,
)
from ldm_jax.diffusion.schedule import make_schedule

S = make_schedule('linear', 1000, 0.0015, 0.0195)
ABAR = np.float64(S.alphas_cumprod)
W = np.random.default_rng(0).normal(size=(3, 3)) * 0.3


def eps_np(x, t):
  return np.tanh(x @ W) * (1 + t / 1000.0)


def eps_jax(x, t):
  return jnp.tanh(x @ jnp.asarray(W, jnp.float32)) * (1 + t[:, None, None, None] / 1000.0)


def x_T():
  return np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype(np.float32)


def test_ddim_grid_has_the_reference_offset():
  np.testing.assert_array_equal(make_ddim_timesteps(50, 1000)[:3], [1, 21, 41])
  assert make_ddim_timesteps(50, 1000)[-1] == 981
  assert len(make_ddim_timesteps(400, 1000)) == 500  # T // 400 = 2
  assert len(make_ddim_timesteps(250, 1000)) == 250
  for bad in (1000, 300):  # range(0, 1000, 3) + 1 ends at 1000: an IndexError in the reference
    with pytest.raises(ValueError, match='issue #136'):
      make_ddim_timesteps(bad, 1000)


def ddim_reference(x, steps, eta=0.0, noises=None):
  ts = make_ddim_timesteps(steps, 1000)
  a_t = ABAR[ts]
  a_prev = np.concatenate([ABAR[:1], ABAR[ts[:-1]]])
  sig = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
  x = np.float64(x)
  for j, i in enumerate(range(len(ts) - 1, -1, -1)):
    e = eps_np(x, ts[i])
    x0 = (x - np.sqrt(1 - a_t[i]) * e) / np.sqrt(a_t[i])
    noise = 0 if noises is None else sig[i] * noises[j]
    x = np.sqrt(a_prev[i]) * x0 + np.sqrt(1 - a_prev[i] - sig[i] ** 2) * e + noise
  return x


def test_ddim_matches_reference_loop():
  out = jax.jit(lambda x: ddim_sample(eps_jax, x, jax.random.PRNGKey(0), S, 20))(x_T())
  np.testing.assert_allclose(out, ddim_reference(x_T(), 20), atol=2e-4)


def test_plms_matches_reference_loop():
  ts = make_ddim_timesteps(10, 1000)
  a_t = ABAR[ts]
  a_prev = np.concatenate([ABAR[:1], ABAR[ts[:-1]]])
  step = lambda x, e, i: (
    np.sqrt(a_prev[i]) * (x - np.sqrt(1 - a_t[i]) * e) / np.sqrt(a_t[i])
    + np.sqrt(1 - a_prev[i]) * e
  )
  x, old = np.float64(x_T()), []
  desc = list(range(len(ts) - 1, -1, -1))
  for j, i in enumerate(desc):
    e = eps_np(x, ts[i])
    if not old:
      t_next = ts[desc[min(j + 1, len(desc) - 1)]]
      e_prime = (e + eps_np(step(x, e, i), t_next)) / 2
    elif len(old) == 1:
      e_prime = (3 * e - old[-1]) / 2
    elif len(old) == 2:
      e_prime = (23 * e - 16 * old[-1] + 5 * old[-2]) / 12
    else:
      e_prime = (55 * e - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
    x = step(x, e_prime, i)
    old = (old + [e])[-3:]
  out = jax.jit(lambda x: plms_sample(eps_jax, x, None, S, 10))(x_T())
  np.testing.assert_allclose(out, x, atol=2e-4)
  with pytest.raises(ValueError, match='eta must be 0'):
    plms_sample(eps_jax, x_T(), None, S, 10, eta=0.5)


def test_ddim_oracle_recovers_the_data_point_at_abar0():
  """With the exact eps of a single data point, eta=0 DDIM lands on sqrt(abar_0) x0 + ... (the last
  step targets abar[0], not 1)."""
  x0 = jnp.full((1, 2, 2, 1), 0.7)
  xT = jnp.full((1, 2, 2, 1), -0.3)
  a981 = float(S.alphas_cumprod[981])
  eps_true = (xT - np.sqrt(a981) * x0) / np.sqrt(1 - a981)
  oracle = lambda x, t: (
    (x - jnp.sqrt(S.alphas_cumprod[t])[:, None, None, None] * x0)
    / jnp.sqrt(1 - S.alphas_cumprod[t])[:, None, None, None]
  )
  out = ddim_sample(oracle, xT, jax.random.PRNGKey(0), S, 50)
  np.testing.assert_allclose(
    out, np.sqrt(ABAR[0]) * x0 + np.sqrt(1 - ABAR[0]) * eps_true, atol=1e-4
  )


@pytest.mark.parametrize(
  'sampler,kw', [(ddim_sample, dict(num_steps=10, eta=1.0)), (ddpm_sample, {})]
)
def test_stochastic_samplers_are_deterministic_under_a_seed(sampler, kw):
  f = jax.jit(lambda x, k: sampler(eps_jax, x, k, S, **kw))
  a = f(x_T(), jax.random.PRNGKey(3))
  b = f(x_T(), jax.random.PRNGKey(3))
  c = f(x_T(), jax.random.PRNGKey(4))
  np.testing.assert_array_equal(a, b)
  assert float(jnp.abs(a - c).max()) > 1e-3


def test_ddpm_with_zero_eps_follows_the_posterior_mean_chain():
  """eps = 0 means x0_hat = x_t / sqrt(abar_t): the mean chain is deterministic up to the noise,
  whose variance at t = 0 is zero; compare against a numpy loop with the same noise draws."""
  keys = jax.random.split(jax.random.PRNGKey(5), 1000)
  x = np.float64(x_T())
  c1, c2 = np.float64(S.posterior_mean_coef1), np.float64(S.posterior_mean_coef2)
  logvar = np.float64(S.posterior_log_variance_clipped)
  for j, t in enumerate(range(999, -1, -1)):
    x0 = x / np.sqrt(ABAR[t])
    noise = np.asarray(jax.random.normal(keys[j], x.shape))
    x = c1[t] * x0 + c2[t] * x + (t > 0) * np.exp(0.5 * logvar[t]) * noise
  out = jax.jit(lambda x, k: ddpm_sample(lambda x, t: jnp.zeros_like(x), x, k, S))(
    x_T(), jax.random.PRNGKey(5)
  )
  np.testing.assert_allclose(out, x, rtol=1e-3, atol=1e-3)


def test_guidance_combines_unconditional_first():
  model = lambda x, t, c: x * c[:, None, None, None]
  f = guided_eps_fn(model, jnp.array([2.0]), jnp.array([0.5]), scale=3.0)
  out = f(jnp.ones((1, 1, 1, 1)), jnp.zeros((1,), jnp.int32))
  assert float(out.squeeze()) == pytest.approx(0.5 + 3.0 * (2.0 - 0.5))
  same = guided_eps_fn(model, jnp.array([2.0]), jnp.array([0.5]), scale=1.0)
  assert float(same(jnp.ones((1, 1, 1, 1)), jnp.zeros((1,), jnp.int32)).squeeze()) == 2.0


def test_tiles_cover_the_canvas_and_blend_back_exactly():
  import jax.numpy as jnp

  from ldm_jax.diffusion.samplers.tiling import _blend, border_weights, tile_starts, tiled_model_fn

  assert tile_starts(20, 8, 4) == [0, 4, 8, 12] and tile_starts(21, 8, 4) == [0, 4, 8, 12, 13]
  assert tile_starts(6, 8, 4) == [0]
  w = border_weights(8, 8)
  assert w.min() == pytest.approx(0.01) and w.max() == pytest.approx(0.5)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 21, 13, 3)), jnp.float32)
  np.testing.assert_allclose(_blend(lambda a, _: a, x, None, 8, 4, 1), x, atol=1e-6)
  up = lambda a, _: jnp.repeat(jnp.repeat(a, 2, 1), 2, 2)  # a per-pixel 2x "decoder"
  np.testing.assert_allclose(_blend(up, x, None, 8, 3, 2), up(x, None), atol=1e-6)
  # A local (per-pixel) model with a concatenated condition and a shared context: tiling is exact.
  cond = {
    'concat': jnp.asarray(rng.normal(size=(2, 21, 13, 1)), jnp.float32),
    'crossattn': jnp.ones((2, 4, 5)),
  }
  model = lambda a, t, c: (
    a * c['concat'] + t[:, None, None, None] + c['crossattn'].sum((1, 2))[:, None, None, None]
  )
  t = jnp.array([3, 7])
  np.testing.assert_allclose(
    tiled_model_fn(model, 8, 4)(x, t, cond), model(x, t, cond), rtol=1e-5, atol=1e-5
  )
