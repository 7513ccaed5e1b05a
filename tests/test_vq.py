"""The VQ first stage: a training step (codebook loss, perplexity, usage) and the LDM interface
(encode returns pre-quantisation latents, decode quantises first)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldm_jax.latent_diffusion import LatentDiffusion, build_first_stage
from ldm_jax.train.autoencoder_step import make_autoencoder_step
from ldm_jax.train.state import TrainState, init_loss_state
from tests.helpers import tiny_autoencoder_config, tiny_ldm_config


def vq_config(config):
  config.first_stage.update(dict(kind='vq', n_embed=16, embed_dim=3, z_channels=3))
  return config


def test_vq_autoencoder_step_reports_codebook_terms_and_learns():
  config = vq_config(tiny_autoencoder_config())
  model = build_first_stage(config.first_stage)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x[:1])['params']
  tx = optax.adam(1e-3)
  config.first_stage_loss.update(dict(perceptual_weight=0.0, use_discriminator=False))
  state = TrainState.create(params, tx, False, 1.0, init_loss_state(config, None))
  step = jax.jit(make_autoencoder_step(model, tx, config))
  losses = []
  for _ in range(15):
    state, m = step(state, {'image': x, 'label': jnp.zeros(8, jnp.int32)})
    losses.append(float(m['loss']))
  assert {'codebook_loss', 'perplexity', 'codebook_usage', 'rec_loss'} <= set(m)
  assert 1.0 <= float(m['perplexity']) <= 16.0 and 0 < float(m['codebook_usage']) <= 1.0
  assert losses[-1] < losses[0]


def test_ldm_vq_interface_encode_prequant_decode_quantises():
  config = vq_config(tiny_ldm_config())
  ldm = LatentDiffusion.from_config(config)
  fs_params = ldm.first_stage.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)), jnp.float32)
  h = ldm.encode(fs_params, x, jax.random.PRNGKey(1))
  codebook = fs_params['quantize']['embedding']['embedding']
  # Not quantised: the latents are (almost surely) not codebook vectors.
  dist = jnp.min(jnp.sum((h.reshape(-1, 1, 3) - codebook[None]) ** 2, -1), -1)
  assert float(dist.max()) > 1e-6
  z_q, _, _ = ldm.first_stage.apply({'params': fs_params}, h, method=lambda m, h: m.quantize(h))
  np.testing.assert_allclose(
    ldm.decode(fs_params, h * 2.0, 2.0),
    ldm.first_stage.apply({'params': fs_params}, z_q, method='decode_quantized'),
    atol=1e-5,
  )
