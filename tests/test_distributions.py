"""ldm_jax.nn.distributions: the KL autoencoder's diagonal Gaussian posterior."""

import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.nn.distributions import DiagonalGaussian


def test_diagonal_gaussian_clamps_and_kl():
  moments = jnp.concatenate([jnp.zeros((1, 2, 2, 1)), jnp.full((1, 2, 2, 1), 50.0)], -1)
  g = DiagonalGaussian.from_moments(moments)
  assert float(g.logvar.max()) == 20.0
  std_normal = DiagonalGaussian.from_moments(jnp.zeros((3, 2, 2, 2)))
  np.testing.assert_allclose(std_normal.kl(), 0.0)
  g2 = DiagonalGaussian(mean=jnp.ones((1, 1, 1, 1)), logvar=jnp.zeros((1, 1, 1, 1)))
  assert float(g2.kl()[0]) == pytest.approx(0.5)
