"""Pure functions: diffusion math, EMA, the Gaussian posterior, the quantiser, embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion import gaussian as diffusion
from ldm_jax.nn.distributions import DiagonalGaussian
from ldm_jax.train.ema import ema_decay, ema_update
from ldm_jax.nn.quantize import VectorQuantizer
from ldm_jax.diffusion.schedule import make_schedule
from ldm_jax.nn.unet import timestep_embedding

S = make_schedule('linear', 1000, 0.0015, 0.0195)


def test_timestep_embedding_is_cos_first():
  emb = timestep_embedding(jnp.array([1]), 8)[0]
  np.testing.assert_allclose(
    emb, [0.5403, 0.9950, 0.99995, 1.0, 0.8415, 0.0998, 0.0100, 0.0010], atol=1e-4
  )


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


def test_ema_warmup_and_update():
  assert float(ema_decay(1)) == pytest.approx(2 / 11)
  assert float(ema_decay(10**7)) == pytest.approx(0.9999)
  new = ema_update({'w': jnp.array(1.0)}, {'w': jnp.array(0.0)}, 1)
  assert float(new['w']) == pytest.approx(2 / 11)


def test_diagonal_gaussian_clamps_and_kl():
  moments = jnp.concatenate([jnp.zeros((1, 2, 2, 1)), jnp.full((1, 2, 2, 1), 50.0)], -1)
  g = DiagonalGaussian.from_moments(moments)
  assert float(g.logvar.max()) == 20.0
  std_normal = DiagonalGaussian.from_moments(jnp.zeros((3, 2, 2, 2)))
  np.testing.assert_allclose(std_normal.kl(), 0.0)
  g2 = DiagonalGaussian(mean=jnp.ones((1, 1, 1, 1)), logvar=jnp.zeros((1, 1, 1, 1)))
  assert float(g2.kl()[0]) == pytest.approx(0.5)


def test_vector_quantizer_nearest_code_straight_through_and_legacy_loss():
  vq = VectorQuantizer(n_embed=4, embed_dim=2, beta=0.25)
  codebook = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  params = {'embedding': {'embedding': codebook}}
  z = jnp.array([[[[0.9, 0.1], [0.2, 0.8]]]])  # [1, 1, 2, 2]
  zq, loss, idx = vq.apply({'params': params}, z)
  np.testing.assert_array_equal(idx, [[[1, 2]]])
  np.testing.assert_allclose(zq, [[[[1.0, 0.0], [0.0, 1.0]]]], atol=1e-6)
  mse = float(jnp.mean((codebook[jnp.array([1, 2])] - z[0, 0]) ** 2))
  assert float(loss) == pytest.approx(1.25 * mse, rel=1e-5)
  grad = jax.grad(lambda z: vq.apply({'params': params}, z)[0].sum())(z)
  np.testing.assert_allclose(grad, jnp.ones_like(z))  # straight-through
