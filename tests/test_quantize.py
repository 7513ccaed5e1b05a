"""ldm_jax.nn.quantize: nearest code, straight-through gradient, the legacy loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.nn.quantize import VectorQuantizer


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
