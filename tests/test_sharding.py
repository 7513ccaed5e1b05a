"""The jitted data-parallel step on 8 (fake CPU) devices equals the same step on 1 device.

The steps run with SGD (update = -lr * grad) so that equal parameters mean equal gradients: Adam's
first updates are ~lr * sign(grad) and flip for gradients that are zero up to float noise, which
says nothing about the sharding."""
import jax
import numpy as np
import optax
import pytest

from ldm_jax import sharding
from ldm_jax.lpips import make_lpips
from ldm_jax.models import LatentDiffusion, build_discriminator, build_first_stage, latent_shape
from ldm_jax.train_state import TrainState, init_loss_state
from ldm_jax.train_steps import make_autoencoder_step, make_ldm_step
from tests.helpers import tiny_autoencoder_config, tiny_ldm_config

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices (see conftest)')


def run_steps(mesh, step_fn, state, batches, frozen):
  repl, data = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  f = jax.jit(step_fn, in_shardings=(repl, data, repl), out_shardings=(repl, repl))
  state = jax.device_put(state, repl)
  frozen = jax.device_put(frozen, repl)
  losses = []
  for b in batches:
    state, m = f(state, jax.device_put(b, data), frozen)
    losses.append(float(m['loss']))
  return jax.device_get(state), losses


def batches(n, shape, with_labels=True):
  rng = np.random.default_rng(0)
  return [{'image': rng.uniform(-1, 1, (8,) + shape).astype(np.float32),
           'label': rng.integers(0, 10, 8).astype(np.int32)} for _ in range(n)]


def compare(step_fn, state, data, frozen):
  one, l1 = run_steps(sharding.make_mesh(jax.devices()[:1]), step_fn, state, data, frozen)
  eight, l8 = run_steps(sharding.make_mesh(jax.devices()[:8]), step_fn, state, data, frozen)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
  change = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(state.params)))
  assert change > 1e-5  # the steps did update the parameters
  return one, eight


def test_ldm_step_8_devices_equals_1_device():
  config = tiny_ldm_config()
  ldm = LatentDiffusion.from_config(config)
  tx = optax.sgd(0.5)
  state = TrainState.create(ldm.init_params(jax.random.PRNGKey(0), latent_shape(config)), tx,
                            True, 0.5)
  fs = build_first_stage(config.first_stage)
  fs_params = fs.init(jax.random.PRNGKey(1), np.zeros((1, 16, 16, 3), np.float32))['params']
  compare(make_ldm_step(ldm, tx, config), state, batches(2, (16, 16, 3)), fs_params)


def test_autoencoder_gan_step_8_devices_equals_1_device():
  """Generator (L1 + LPIPS + KL + adaptive adversarial term) and discriminator (BatchNorm: global
  batch statistics) updated in one step, from step 0 (disc_start 0)."""
  config = tiny_autoencoder_config()
  config.first_stage_loss.update(dict(disc_start=0, disc_num_layers=2, perceptual_weight=1.0,
                                      use_discriminator=True))
  model = build_first_stage(config.first_stage)
  disc = build_discriminator(config)
  tx, tx_d = optax.sgd(1e-4), optax.sgd(1e-2)  # the per-sample-sum loss has large gradients
  x0 = np.zeros((1, 16, 16, 3), np.float32)
  params = model.init(jax.random.PRNGKey(0), x0)['params']
  state = TrainState.create(params, tx, False, 1.0,
                            init_loss_state(config, jax.random.PRNGKey(1), disc, x0, tx_d))
  lpips_params, lpips_fn = make_lpips()
  step = make_autoencoder_step(model, tx, config, disc, tx_d, lpips_fn)
  one, eight = compare(step, state, batches(2, (16, 16, 3)), lpips_params)
  for a, b in zip(jax.tree.leaves(one.loss_state['disc']), jax.tree.leaves(eight.loss_state['disc'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
