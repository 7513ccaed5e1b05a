"""ldm_jax.diffusion.gaussian: the forward process, its posterior and the losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import gaussian as diffusion
from ldm_jax.diffusion.schedule import make_schedule

S = make_schedule('linear', 1000, 0.0015, 0.0195)


def test_q_sample_predict_start_and_posterior_are_consistent():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x0 = jax.random.normal(k1, (4, 8, 8, 3))
  eps = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 10, 500, 999])
  xt = diffusion.q_sample(S, x0, t, eps)
  np.testing.assert_allclose(diffusion.predict_start_from_noise(S, xt, t, eps), x0, atol=2e-3)
  np.testing.assert_allclose(
    diffusion.predict_noise_from_start(S, xt, t, x0)[1:], eps[1:], atol=1e-3
  )
  mean, var, _ = diffusion.q_posterior(S, x0, xt, t)
  # Posterior mean by Bayes for one element at t=500.
  a, ap, b = (float(S.alphas_cumprod[500]), float(S.alphas_cumprod_prev[500]), float(S.betas[500]))
  expected = (np.sqrt(ap) * b * x0[2] + np.sqrt(1 - b) * (1 - ap) * xt[2]) / (1 - a)
  np.testing.assert_allclose(mean[2], expected, rtol=1e-4, atol=1e-5)
  assert float(var[0].squeeze()) == 0.0


def test_loss_l1_l2_and_x0_target():
  x0 = jnp.ones((2, 2, 2, 1))
  noise = jnp.zeros_like(x0)
  out = jnp.full_like(x0, 3.0)
  t = jnp.array([1, 2])
  l2, m = diffusion.diffusion_loss(S, out, x0, noise, t, loss_type='l2')
  l1, _ = diffusion.diffusion_loss(S, out, x0, noise, t, loss_type='l1')
  assert float(l2) == pytest.approx(9.0) and float(l1) == pytest.approx(3.0)
  lx0, _ = diffusion.diffusion_loss(S, out, x0, noise, t, parameterization='x0', loss_type='l2')
  assert float(lx0) == pytest.approx(4.0)
  lv, mv = diffusion.diffusion_loss(S, out, x0, noise, t, loss_type='l2', original_elbo_weight=0.5)
  assert float(lv) == pytest.approx(9.0 + 0.5 * float(mv['loss_vlb']))
  with pytest.raises(ValueError, match='loss_type'):
    diffusion.diffusion_loss(S, out, x0, noise, t, loss_type='huber')
