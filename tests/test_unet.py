"""ldm_jax.nn.unet: pieces checked alone (the whole UNet: test_parity_unet, test_architecture)."""

import jax.numpy as jnp
import numpy as np

from ldm_jax.nn.unet import timestep_embedding


def test_timestep_embedding_is_cos_first():
  emb = timestep_embedding(jnp.array([1]), 8)[0]
  np.testing.assert_allclose(
    emb, [0.5403, 0.9950, 0.99995, 1.0, 0.8415, 0.0998, 0.0100, 0.0010], atol=1e-4
  )
