"""The jitted step on 8 (fake CPU) devices, data-parallel or FSDP, equals the same step on 1 device;
and the step's options (gradient accumulation, bf16 compute, remat, the NaN guard) do what they say.

The steps run with SGD (update = -lr * grad) so that equal parameters mean equal gradients: Adam's
first updates are ~lr * sign(grad) and flip for gradients that are zero up to float noise, which
says nothing about the sharding. Tolerance (float32, different reduction orders): losses rtol 1e-5,
parameters rtol 1e-4 / atol 2e-6.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.config import base_config
from ldm_jax.latent_diffusion import (
  LatentDiffusion,
  build_discriminator,
  build_first_stage,
  latent_shape,
)
from ldm_jax.nn.lpips import make_lpips
from ldm_jax.parallel import sharding
from ldm_jax.train.autoencoder_step import make_autoencoder_step
from ldm_jax.train.ldm_step import make_ldm_step
from ldm_jax.train.state import TrainState, init_loss_state, make_optimizer
from ldm_jax.train.step_common import guard_nonfinite
from tests.helpers import tiny_autoencoder_config, tiny_ldm_config

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 devices (see conftest)')


def mesh_config(data=-1, fsdp=1, min_size=64):
  m = base_config().mesh
  m.update(dict(data=data, fsdp=fsdp, fsdp_min_size=min_size))
  return m


def run_steps(mesh, step_fn, state, batches, frozen, mesh_cfg=None):
  state_sh = sharding.state_shardings(state, mesh, mesh_cfg)
  frozen_sh = sharding.state_shardings(frozen, mesh, mesh_cfg)
  f = jax.jit(
    step_fn,
    in_shardings=(state_sh, sharding.batch_sharded(mesh), frozen_sh),
    out_shardings=(state_sh, sharding.replicated(mesh)),
  )
  state = jax.device_put(state, state_sh)
  frozen = jax.device_put(frozen, frozen_sh)
  losses = []
  for b in batches:
    state, m = f(state, jax.device_put(b, sharding.batch_sharded(mesh)), frozen)
    losses.append(float(m['loss']))
  return state, losses


def batches(n, shape, size=8):
  rng = np.random.default_rng(0)
  return [
    {
      'image': rng.uniform(-1, 1, (size,) + shape).astype(np.float32),
      'label': rng.integers(0, 10, size).astype(np.int32),
    }
    for _ in range(n)
  ]


def assert_same(a_state, b_state, a_losses, b_losses):
  np.testing.assert_allclose(a_losses, b_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(a_state.params), jax.tree.leaves(b_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=2e-6)


def changed(a_state, b_state) -> float:
  return max(
    float(np.abs(np.asarray(a) - np.asarray(b)).max())
    for a, b in zip(jax.tree.leaves(a_state.params), jax.tree.leaves(b_state.params))
  )


def compare(step_fn, state, data, frozen, reference=None):
  """1 device (or ``reference``: its result) vs 8 devices data-parallel vs 8 devices as data 2 x
  fsdp 4 (params, EMA, optimizer state and the frozen network split over 'fsdp')."""
  one, l1 = reference or run_steps(
    sharding.make_mesh(None, jax.devices()[:1]), step_fn, state, data, frozen
  )
  dp_cfg, fsdp_cfg = mesh_config(), mesh_config(data=2, fsdp=4)
  dp, l_dp = run_steps(sharding.make_mesh(dp_cfg), step_fn, state, data, frozen, dp_cfg)
  fsdp_mesh = sharding.make_mesh(fsdp_cfg)
  assert dict(fsdp_mesh.shape) == {'data': 2, 'fsdp': 4}
  fsdp, l_fsdp = run_steps(fsdp_mesh, step_fn, state, data, frozen, fsdp_cfg)
  assert_same(one, dp, l1, l_dp)
  assert_same(one, fsdp, l1, l_fsdp)
  # FSDP really split the state: most parameter bytes live on one device in four
  split = [x for x in jax.tree.leaves(fsdp.params) if 'fsdp' in tuple(x.sharding.spec)]
  assert sum(x.size for x in split) > 0.9 * sum(x.size for x in jax.tree.leaves(fsdp.params))
  assert sharding.bytes_per_device(
    fsdp.params, jax.tree.map(lambda x: x.sharding, fsdp.params)
  ) < 0.35 * sum(x.nbytes for x in jax.tree.leaves(fsdp.params))
  assert changed(one, state) > 1e-5  # the steps did update the parameters
  return jax.device_get(one), jax.device_get(fsdp)


def ldm_setup(config=None, **from_config):
  if config is None:
    config = tiny_ldm_config()
    config.unet.num_res_blocks = 1  # every test here compiles a step or two: keep them small
  ldm = LatentDiffusion.from_config(config, **from_config)
  tx = optax.sgd(0.5)
  state = TrainState.create(
    ldm.init_params(jax.random.PRNGKey(0), latent_shape(config)), tx, True, 0.5
  )
  fs = build_first_stage(config.first_stage)
  fs_params = fs.init(jax.random.PRNGKey(1), np.zeros((1, 16, 16, 3), np.float32))['params']
  return config, ldm, tx, state, fs_params


@pytest.fixture(scope='module')
def ldm_reference():
  """The tiny LDM, its state, two batches, and the float32 result of two steps on 1 device."""
  config, ldm, tx, state, fs_params = ldm_setup()
  data = batches(2, (16, 16, 3))
  one, losses = run_steps(
    sharding.make_mesh(None, jax.devices()[:1]),
    make_ldm_step(ldm, tx, config),
    state,
    data,
    fs_params,
  )
  return config, ldm, tx, state, fs_params, data, one, losses


def test_ldm_step_8_devices_dp_and_fsdp_equal_1_device(ldm_reference):
  config, ldm, tx, state, fs_params, data, one, losses = ldm_reference
  compare(make_ldm_step(ldm, tx, config), state, data, fs_params, (one, losses))


def test_autoencoder_gan_step_8_devices_dp_and_fsdp_equal_1_device():
  """Generator (L1 + LPIPS + KL + adaptive adversarial term) and discriminator (BatchNorm: global
  batch statistics) updated in one step, from step 0 (disc_start 0)."""
  config = tiny_autoencoder_config()
  config.first_stage_loss.update(
    dict(disc_start=0, disc_num_layers=2, perceptual_weight=1.0, use_discriminator=True)
  )
  model = build_first_stage(config.first_stage)
  disc = build_discriminator(config)
  tx, tx_d = optax.sgd(1e-4), optax.sgd(1e-2)  # the per-sample-sum loss has large gradients
  x0 = np.zeros((1, 16, 16, 3), np.float32)
  params = model.init(jax.random.PRNGKey(0), x0)['params']
  state = TrainState.create(
    params, tx, False, 1.0, init_loss_state(config, jax.random.PRNGKey(1), disc, x0, tx_d)
  )
  lpips_params, lpips_fn = make_lpips()
  step = make_autoencoder_step(model, tx, config, disc, tx_d, lpips_fn)
  one, fsdp = compare(step, state, batches(2, (16, 16, 3)), lpips_params)
  for a, b in zip(
    jax.tree.leaves(one.loss_state['disc']), jax.tree.leaves(fsdp.loss_state['disc'])
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_adam_state_and_ema_are_sharded_like_the_params(ldm_reference):
  config, ldm = ldm_reference[:2]
  tx = make_optimizer(config)
  abstract = jax.eval_shape(
    lambda k: TrainState.create(ldm.init_params(k, latent_shape(config)), tx, True, 1.0),
    jax.random.PRNGKey(0),
  )
  cfg = mesh_config(data=2, fsdp=4)
  sh = sharding.state_shardings(abstract, sharding.make_mesh(cfg), cfg)
  params = jax.tree.leaves(sh.params)
  assert [s.spec for s in jax.tree.leaves(sh.ema_params)] == [s.spec for s in params]
  adam = sh.opt_state[1][0]
  for moment in (adam.mu, adam.nu):
    assert [s.spec for s in jax.tree.leaves(moment)] == [s.spec for s in params]
  assert any('fsdp' in tuple(s.spec) for s in params)


def test_fsdp_rules_pick_dimensions_and_keep_small_arrays_whole():
  rules = (('embedding$', '0'), ('norm', 'replicate'), ('.*', 'largest'))
  spec = lambda path, shape: sharding.fsdp_spec(path, shape, 4, rules, 64)
  assert spec('unet/time_embed_0/kernel', (128, 512)) == jax.P(None, 'fsdp')
  assert spec('cond_stage/tok_emb/embedding', (30522, 32)) == jax.P()  # 30522 % 4 != 0
  assert spec('cond_stage/tok_emb/embedding', (1000, 32)) == jax.P('fsdp', None)
  assert spec('unet/out_0/norm/scale', (4096,)) == jax.P()
  assert spec('unet/out_2/bias', (4,)) == jax.P()  # below min size
  assert spec('unet/conv/kernel', (3, 3, 6, 10)) == jax.P()  # nothing divisible by 4
  with pytest.raises(ValueError, match='fsdp_rules'):
    sharding.fsdp_spec('x', (64, 64), 4, (('.*', 'biggest'),), 1)
  with pytest.raises(ValueError, match='cannot fill'):
    sharding.make_mesh(mesh_config(data=-1, fsdp=3))


def test_txt2img_1p45b_state_fits_a_16gb_chip_only_with_fsdp():
  """The released 1.45B text-to-image config: parameters + Adam moments (it keeps no EMA),
  replicated vs FSDP over 8 devices (shapes only, nothing allocated)."""
  from ldm_jax.configs.released import txt2img_1p4b

  config = txt2img_1p4b.get_config()
  ldm = LatentDiffusion.from_config(config)
  tx = make_optimizer(config)
  abstract = jax.eval_shape(
    lambda k: TrainState.create(
      ldm.init_params(k, latent_shape(config)), tx, config.training.use_ema, 1.0
    ),
    jax.random.PRNGKey(0),
  )
  n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  assert 1.40e9 < n_params < 1.50e9
  devices = jax.devices()[:8]
  repl_mesh = sharding.make_mesh(mesh_config(), devices)
  replicated = sharding.bytes_per_device(abstract, sharding.state_shardings(abstract, repl_mesh))
  cfg = base_config().mesh
  cfg.update(dict(data=1, fsdp=8))
  fsdp = sharding.bytes_per_device(
    abstract, sharding.state_shardings(abstract, sharding.make_mesh(cfg, devices), cfg)
  )
  gib = 2**30
  assert replicated > 16 * gib  # 12 bytes per parameter: more than a 16 GiB chip holds
  assert fsdp < 1.02 * replicated / 8 + 0.05 * gib  # close to an even split
  print(
    f'1.45B state per device: replicated {replicated / gib:.2f} GiB, fsdp=8 {fsdp / gib:.2f} GiB'
  )


def test_gradient_accumulation_equals_the_whole_batch(ldm_reference):
  """grad_accum_steps=4 over a batch of 8 on 2 devices == one step on the whole batch on 1
  device: every example draws its own noise and timestep, whatever the split."""
  config, ldm, tx, state, fs_params, data, one, l1 = ldm_reference
  config = config.copy_and_resolve_references()
  config.training.grad_accum_steps = 4
  acc, l2 = run_steps(
    sharding.make_mesh(mesh_config(), jax.devices()[:2]),
    make_ldm_step(ldm, tx, config),
    state,
    data,
    fs_params,
    mesh_config(),
  )
  assert_same(one, acc, l1, l2)


def test_remat_changes_memory_not_results(ldm_reference):
  config, _, tx, state, fs_params, data, ref, l_ref = ldm_reference
  mesh = sharding.make_mesh(None, jax.devices()[:1])
  for policy in ('full', 'dots'):
    ldm_r = LatentDiffusion.from_config(config, remat=policy)
    out, l_out = run_steps(mesh, make_ldm_step(ldm_r, tx, config), state, data, fs_params)
    assert_same(ref, out, l_ref, l_out)


def test_bf16_compute_keeps_fp32_parameters_and_close_loss(ldm_reference):
  config, _, tx, state, fs_params, data, ref, l_ref = ldm_reference
  mesh = sharding.make_mesh(None, jax.devices()[:1])
  ldm16 = LatentDiffusion.from_config(config, compute_dtype='bfloat16')
  out, l16 = run_steps(mesh, make_ldm_step(ldm16, tx, config), state, data, fs_params)
  assert {x.dtype for x in jax.tree.leaves(out.params)} == {jnp.dtype('float32')}
  np.testing.assert_allclose(l16, l_ref, rtol=3e-2)
  assert l16 != l_ref  # it did compute in bf16
  assert changed(out, state) > 1e-5


def test_nonfinite_guard_skips_the_update_and_counts_it(ldm_reference):
  config, ldm, tx, state, fs_params = ldm_reference[:5]
  step = jax.jit(guard_nonfinite(make_ldm_step(ldm, tx, config)))
  good, bad = batches(1, (16, 16, 3))[0], batches(1, (16, 16, 3))[0]
  bad['image'][0, 0, 0, 0] = np.nan
  after_bad, m_bad = step(state, bad, fs_params)
  assert float(m_bad['nonfinite']) == 1.0 and int(after_bad.step) == 0  # updates applied
  for a, b in zip(
    jax.tree.leaves((state.params, state.ema_params, state.opt_state)),
    jax.tree.leaves((after_bad.params, after_bad.ema_params, after_bad.opt_state)),
  ):
    np.testing.assert_array_equal(a, b)
  after_good, m_good = step(after_bad, good, fs_params)
  assert float(m_good['nonfinite']) == 0.0 and changed(after_good, state) > 1e-5


def test_nonfinite_counter_stops_after_k_in_a_row():
  from ldm_jax.train.nonfinite import NonfiniteCounter

  class Checkpoints:  # saved at 0, 2, 4
    directory, protected = '/runs/x/checkpoints', set()

    def all_steps(self):
      return [0, 2, 4]

  ckpt = Checkpoints()
  counter = NonfiniteCounter(3, ckpt)
  for i, flag in enumerate([1.0, 1.0, 0.0, 1.0, 1.0]):
    counter.add({'nonfinite': np.float32(flag)}, i)
    counter.flush()
    # a streak keeps the newest checkpoint from before its last finite update: (update 0 has
    # none before it), then 2 (update 3 was the last finite one; checkpoint 2 holds 1..2)
    assert ckpt.protected == [set(), set(), set(), {2}, {2}][i]
  assert counter.total == 4 and counter.streak == 2
  counter.add({'nonfinite': np.float32(1.0)}, 5)
  with pytest.raises(
    FloatingPointError, match=r'3 steps in a row \(from step 4\).*/runs/x/checkpoints/2'
  ):
    counter.flush()


def test_nonfinite_counter_holds_the_checkpoint_before_the_newest_until_it_is_confirmed():
  """Checkpoints every step, keep 1: when step 5 is saved, 4 is held (update 5 may be the blow-up)
  until update 6 is finite; if update 6 is NaN, 4 is the one named and kept."""
  from ldm_jax.train.nonfinite import NonfiniteCounter

  class Checkpoints:
    directory, protected = '/runs/x/checkpoints', set()
    steps = [4]

    def all_steps(self):
      return list(self.steps)

  ckpt = Checkpoints()
  counter = NonfiniteCounter(2, ckpt, latest=4)
  counter.before_save(5)
  ckpt.steps.append(5)
  assert ckpt.protected == {4}  # held while update 6 is unknown
  counter.add({'nonfinite': np.float32(0.0)}, 5)  # update 6: finite
  counter.flush()
  assert ckpt.protected == set()  # 5 is confirmed: 4 may go
  counter.before_save(6)
  ckpt.steps.append(6)
  assert ckpt.protected == {5}
  counter.add({'nonfinite': np.float32(1.0)}, 6)  # update 7: NaN; 6 holds update 6
  counter.add({'nonfinite': np.float32(1.0)}, 7)
  with pytest.raises(FloatingPointError, match=r'from step 7.*checkpoints/5 \(kept\)'):
    counter.flush()
  assert 5 in ckpt.protected
