"""ldm_jax.nn.unet: pieces checked alone (the whole UNet: test_parity_unet, test_architecture)."""

import jax.numpy as jnp
import numpy as np

from ldm_jax.nn.unet import timestep_embedding


def test_timestep_embedding_is_cos_first():
  emb = timestep_embedding(jnp.array([1]), 8)[0]
  np.testing.assert_allclose(
    emb, [0.5403, 0.9950, 0.99995, 1.0, 0.8415, 0.0998, 0.0100, 0.0010], atol=1e-4
  )


def test_context_mask_equals_leaving_the_padding_out():
  """A UNet whose cross-attention reads only the masked-in context tokens gives, per example,
  what it gives on the context with the padding removed (text models' cond_stage.mask_padding)."""
  import jax

  from ldm_jax.config import UNetConfig
  from ldm_jax.nn.unet import UNetModel

  unet = UNetModel(UNetConfig(in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
                              attention_resolutions=(1,), channel_mult=(1, 2), num_head_channels=16,
                              use_spatial_transformer=True, context_dim=8))  # fmt: skip
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  t = jnp.asarray([10, 500])
  ctx = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
  params = unet.init(jax.random.PRNGKey(0), x, t, ctx)['params']
  params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), params)  # no zero output layer
  lengths = [3, 5]
  mask = jnp.arange(6)[None, :] < jnp.asarray(lengths)[:, None]
  masked = unet.apply({'params': params}, x, t, ctx, context_mask=mask)
  for i, n in enumerate(lengths):
    alone = unet.apply({'params': params}, x[i : i + 1], t[i : i + 1], ctx[i : i + 1, :n])
    np.testing.assert_allclose(masked[i : i + 1], alone, atol=1e-5)
  full = unet.apply({'params': params}, x, t, ctx)
  assert float(jnp.abs(full - masked).max()) > 1e-3
