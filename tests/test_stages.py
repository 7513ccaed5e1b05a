"""The training stages alone (the loop that drives them: test_train_e2e): what each supplies to
the generic loop, and their first-batch hooks (scale_by_std, ActNorm's data-dependent init)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.data.sources import DigitsSource
from ldm_jax.images import to_model_range
from ldm_jax.latent_diffusion import init_first_stage
from ldm_jax.parallel import sharding
from ldm_jax.train.autoencoder_stage import AutoencoderStage
from ldm_jax.train.ldm_stage import LDMStage
from ldm_jax.train.loop import STAGES
from tests.helpers import tiny_autoencoder_config, tiny_ldm_config


def _batch(n=8):
  src = DigitsSource(16, 'train')
  return {'image': to_model_range(np.stack([src.load(i)['image'] for i in range(n)]))}


def test_stage_table_names_both_stages():
  assert STAGES == {'autoencoder': AutoencoderStage, 'ldm': LDMStage}


def test_ldm_stage_state_frozen_first_stage_and_scale_by_std():
  config = tiny_ldm_config()
  config.diffusion.scale_by_std = True
  mesh = sharding.make_mesh(config.mesh)
  stage = LDMStage(config, mesh)
  abstract = jax.eval_shape(stage.init_state, jax.random.PRNGKey(0))
  assert set(abstract.params) == {'unet', 'cond_stage'} and abstract.loss_state is None
  assert jax.tree.structure(abstract.ema_params) == jax.tree.structure(abstract.params)
  fs_abstract = stage.first_stage_shapes()
  assert 'encoder' in fs_abstract and 'decoder' in fs_abstract
  fs = init_first_stage(config, jax.random.PRNGKey(1))
  frozen, frozen_sh = stage.frozen(fs)
  assert frozen is fs and frozen_sh is not None
  batch = _batch()
  state = abstract.replace(scale_factor=jnp.float32(1.0))
  state, first = stage.first_batch(state, lambda: batch, jax.random.PRNGKey(2), fs)
  assert first is batch  # the reference trains on the batch it measured
  latents = stage.ldm.latents_from_batch(
    fs, batch, jax.random.fold_in(jax.random.PRNGKey(2), 2**31 - 1)
  )
  assert float(state.scale_factor) == pytest.approx(1.0 / float(jnp.std(latents)), rel=1e-5)


def test_ldm_stage_without_scale_by_std_consumes_no_batch():
  config = tiny_ldm_config()
  config.diffusion.scale_by_std = False
  stage = LDMStage(config, sharding.make_mesh(config.mesh))
  calls = []
  state, first = stage.first_batch('state', lambda: calls.append(1), jax.random.PRNGKey(0), None)
  assert state == 'state' and first is None and not calls


def test_autoencoder_stage_init_and_actnorm_first_batch():
  config = tiny_autoencoder_config()
  config.first_stage_loss.update(
    dict(use_discriminator=True, use_actnorm=True, perceptual_weight=0.0)
  )
  stage = AutoencoderStage(config, sharding.make_mesh(config.mesh))
  assert stage.first_stage_shapes() is None and stage.load_first_stage() is None
  lpips, _ = stage.frozen(None)
  assert lpips is None  # no perceptual loss, no LPIPS network
  state = jax.jit(stage.init_state)(jax.random.PRNGKey(0))
  assert {'logvar', 'disc', 'disc_opt_state'} <= set(state.loss_state)
  batch = _batch()
  new, first = stage.first_batch(state, lambda: batch, jax.random.PRNGKey(0), None)
  assert first is batch
  changed = jax.tree.map(
    lambda a, b: bool(jnp.any(a != b)), new.loss_state['disc'], state.loss_state['disc']
  )
  assert any(jax.tree.leaves(changed))  # ActNorm's statistics come from the first batch
