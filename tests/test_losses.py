"""First-stage losses and the adversarial training step.

The step computes the adaptive weight and the generator gradient by pulling two reconstruction
gradients back separately (see train_steps). Here both are recomputed by plain autodiff of the
reference's formulas over all parameters, and the step's SGD update must match them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.latent_diffusion import build_discriminator, build_first_stage
from ldm_jax.nn.lpips import make_lpips
from ldm_jax.train import losses
from ldm_jax.train.autoencoder_step import make_autoencoder_step
from ldm_jax.train.state import TrainState, init_loss_state
from ldm_jax.train.step_common import step_key
from tests.helpers import tiny_autoencoder_config

LPIPS_PARAMS, LPIPS_FN = make_lpips()


def test_discriminator_losses_known_values():
  real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 1.0])
  # hinge: 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))
  np.testing.assert_allclose(
    losses.hinge_d_loss(real, fake), 0.5 * ((0 + 0.5 + 2) / 3 + (0 + 1 + 2) / 3), rtol=1e-6
  )
  sp = lambda v: np.log1p(np.exp(v))
  np.testing.assert_allclose(
    losses.vanilla_d_loss(real, fake),
    0.5 * (np.mean(sp(-np.array([2.0, 0.5, -1.0]))) + np.mean(sp(np.array([-2.0, 0.0, 1.0])))),
    rtol=1e-6,
  )
  assert (
    float(losses.adopt_weight(1.0, 4, 5)) == 0.0 and float(losses.adopt_weight(1.0, 5, 5)) == 1.0
  )


def test_nll_kl_is_per_sample_sum_and_vq_is_mean():
  x = jnp.zeros((2, 4, 4, 3))
  rec = jnp.full((2, 4, 4, 3), 0.5)
  p = jnp.array([0.1, 0.3])
  nll_kl, _ = losses.nll_loss(x, rec, p, 1.0, jnp.asarray(0.0), 'kl')
  np.testing.assert_allclose(nll_kl, (48 * 0.5 + 48 * 0.1 + 48 * 0.5 + 48 * 0.3) / 2, rtol=1e-6)
  nll_kl_lv, _ = losses.nll_loss(x, rec, None, 1.0, jnp.asarray(1.0), 'kl')
  np.testing.assert_allclose(nll_kl_lv, 48 * (0.5 / np.e + 1.0), rtol=1e-6)
  nll_vq, rec_mean = losses.nll_loss(x, rec, p, 1.0, 0.0, 'vq')
  np.testing.assert_allclose(nll_vq, 0.5 + 0.2, rtol=1e-6)
  np.testing.assert_allclose(rec_mean, 0.7, rtol=1e-6)


def _setup(kind, disc_start=0, disc_layers=2):
  config = tiny_autoencoder_config()
  config.first_stage_loss.update(
    dict(
      disc_start=disc_start,
      disc_num_layers=disc_layers,
      disc_weight=0.5,
      perceptual_weight=1.0,
      use_discriminator=True,
    )
  )
  if kind == 'vq':
    config.first_stage.update(dict(kind='vq', n_embed=16, embed_dim=3, z_channels=3))
  model = build_first_stage(config.first_stage)
  disc = build_discriminator(config)
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)), jnp.float32)
  params = model.init(jax.random.PRNGKey(0), x[:1])['params']
  return config, model, disc, x, params


@pytest.mark.parametrize('kind', ['kl', 'vq'])
def test_step_matches_direct_autodiff_of_the_reference_loss(kind):
  config, model, disc, x, params = _setup(kind)
  lr = 1e-3
  tx, tx_d = optax.sgd(lr), optax.sgd(lr)
  ls = init_loss_state(config, jax.random.PRNGKey(1), disc, x, tx_d)
  state = TrainState.create(params, tx, False, 1.0, ls)
  step = jax.jit(make_autoencoder_step(model, tx, config, disc, tx_d, LPIPS_FN))
  new, m = step(state, {'image': x}, LPIPS_PARAMS)

  L = config.first_stage_loss
  k_post, k_drop, _, _ = jax.random.split(step_key(config, 0), 4)

  def parts(p):
    out = model.apply({'params': p}, x, k_post, train=True, rngs={'dropout': k_drop})
    rec = out[0]
    reg = (jnp.sum(out[1].kl()) / x.shape[0]) if kind == 'kl' else out[1]
    nll, _ = losses.nll_loss(x, rec, LPIPS_FN(LPIPS_PARAMS, x, rec), 1.0, 0.0, kind)
    g = -jnp.mean(disc.apply(ls['disc'], rec, train=True, mutable=['batch_stats'])[0])
    return nll, g, reg

  last = lambda grads: grads['decoder']['conv_out']['kernel']
  g_nll = jax.jit(jax.grad(lambda p: parts(p)[0]))(params)
  g_adv = jax.jit(jax.grad(lambda p: parts(p)[1]))(params)
  d_weight = (
    np.clip(np.linalg.norm(last(g_nll)) / (np.linalg.norm(last(g_adv)) + 1e-4), 0, 1e4) * 0.5
  )
  np.testing.assert_allclose(m['d_weight'], d_weight, rtol=1e-4)
  reg_w = L.kl_weight if kind == 'kl' else L.codebook_weight
  total = lambda p: (lambda n, g, r: n + reg_w * r + d_weight * g)(*parts(p))
  value, grads = jax.jit(jax.value_and_grad(total))(params)
  np.testing.assert_allclose(m['loss'], value, rtol=1e-5)
  expected = jax.tree.map(lambda p, g: p - lr * g, params, grads)
  for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  # The discriminator moved (disc_start 0) and its logits are reported.
  assert float(m['disc_loss']) > 0 and 'logits_real' in m and 'logits_fake' in m
  d_change = jax.tree.map(
    lambda a, b: float(jnp.abs(a - b).max()), new.loss_state['disc']['params'], ls['disc']['params']
  )
  assert max(jax.tree.leaves(d_change)) > 0


def test_before_disc_start_no_adversarial_update():
  config, model, disc, x, params = _setup('kl', disc_start=10)
  tx = optax.adam(1e-3, b1=0.5, b2=0.9)
  ls = init_loss_state(config, jax.random.PRNGKey(1), disc, x, tx)
  state = TrainState.create(params, tx, False, 1.0, ls)
  step = jax.jit(make_autoencoder_step(model, tx, config, disc, tx, LPIPS_FN))
  new, m = step(state, {'image': x}, LPIPS_PARAMS)
  assert float(m['disc_factor']) == 0.0 and float(m['disc_loss']) == 0.0
  jax.tree.map(
    np.testing.assert_array_equal, new.loss_state['disc']['params'], ls['disc']['params']
  )
  # The generator's loss is reconstruction + KL only.
  np.testing.assert_allclose(m['loss'], m['nll_loss'] + 1e-6 * m['kl_loss'], rtol=1e-6)
  assert float(m['d_weight']) > 0  # computed anyway, as the reference (multiplied by 0)


def test_logvar_is_trained_only_when_asked():
  for train_logvar in (False, True):
    config, model, disc, x, params = _setup('kl')
    config.first_stage_loss.train_logvar = train_logvar
    tx = optax.adam(1e-2)
    tx_lv = optax.adam(1e-2) if train_logvar else None
    ls = init_loss_state(config, jax.random.PRNGKey(1), None, None, None, tx_lv)
    state = TrainState.create(params, tx, False, 1.0, ls)
    step = jax.jit(make_autoencoder_step(model, tx, config, None, None, None, tx_lv))
    new, m = step(state, {'image': x})
    assert 'g_loss' not in m and float(m['p_loss']) == 0.0  # no D, no LPIPS
    moved = float(new.loss_state['logvar']) != 0.0
    assert moved == train_logvar
