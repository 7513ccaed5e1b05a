"""The nine released first-stage configs build exactly the reference's modules: every key of the
reference's state dict (listings dumped from the CompVis code, tests/data) has one leaf of the right
shape in our autoencoder, discriminator or LPIPS trees, and the reverse; encoder/decoder parameter
counts equal the reference models' counts."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from ldm_jax.latent_diffusion import build_discriminator, build_first_stage
from ldm_jax.nn import lpips
from ldm_jax.nn.params import count_params
from tests.test_architecture import assert_maps_one_to_one, reference_keys

# name -> (reference folder, encoder M, decoder M) as the reference's models report them (2 decimals).
RELEASED = {
  'kl_f4': ('kl-f4', 22.35, 32.96),
  'kl_f8': ('kl-f8', 34.16, 49.49),
  'kl_f16': ('kl-f16', 28.27, 41.34),
  'kl_f32': ('kl-f32', 42.61, 61.24),
  'vq_f4': ('vq-f4', 22.34, 32.96),
  'vq_f4_noattn': ('vq-f4-noattn', 21.29, 31.91),
  'vq_f8': ('vq-f8', 27.40, 40.25),
  'vq_f8_n256': ('vq-f8-n256', 27.40, 40.25),
  'vq_f16': ('vq-f16', 28.16, 41.31),
}


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_released_first_stage_matches_reference_state_dict(name):
  folder, enc_m, dec_m = RELEASED[name]
  config = importlib.import_module(f'ldm_jax.configs.released.{name}').get_config()
  listing = f'models-first_stage_models-{folder}-config'
  model = build_first_stage(config.first_stage)
  x = jnp.zeros((1, 256, 256, 3))
  params = jax.eval_shape(lambda k: model.init(k, x)['params'], jax.random.PRNGKey(0))
  rows = reference_keys(listing, '')
  ae_rows = [(k, s) for k, s in rows if not k.startswith('loss.')]
  assert_maps_one_to_one(params, ae_rows)
  assert round(count_params(params['encoder']) / 1e6, 2) == enc_m
  assert round(count_params(params['decoder']) / 1e6, 2) == dec_m

  # Discriminator: conv weight -> kernel, BN weight -> scale, running_mean/var -> batch_stats
  # mean/var; num_batches_tracked has no counterpart (torch's bookkeeping only).
  disc = build_discriminator(config)
  variables = jax.eval_shape(lambda k: disc.init(k, x), jax.random.PRNGKey(0))
  ours = {('params',) + k: v.shape for k, v in flatten_dict(variables['params']).items()}
  ours.update(
    {('batch_stats',) + k: v.shape for k, v in flatten_dict(variables['batch_stats']).items()}
  )
  seen = set()
  for key, shape in reference_keys(listing, 'loss.discriminator.'):
    *mod, leaf = key.split('.')
    module = f'main_{mod[1]}'
    if leaf == 'num_batches_tracked':
      continue
    if leaf in ('running_mean', 'running_var'):
      path = ('batch_stats', module, leaf[len('running_') :])
    elif leaf == 'weight':
      path = ('params', module, 'kernel' if len(shape) == 4 else 'scale')
    else:
      path = ('params', module, 'bias')
    assert path in ours, key
    expected = tuple(shape[i] for i in (2, 3, 1, 0)) if len(shape) == 4 else tuple(shape)
    assert ours[path] == expected, key
    seen.add(path)
  assert seen == set(ours)

  # LPIPS: the perceptual_loss.* keys load into our LPIPS tree (scaling_layer is our constants).
  lp_rows = reference_keys(listing, 'loss.perceptual_loss.')
  rng = np.random.default_rng(0)
  sd = {k: rng.normal(size=s).astype(np.float32) for k, s in lp_rows}
  loaded = lpips.params_from_torch_state_dicts(sd, sd)
  ref = jax.tree.map(np.shape, lpips.load_params())
  assert jax.tree.map(np.shape, loaded) == ref
  assert {k for k, _ in lp_rows} - {k for k, _ in lp_rows if k.startswith(('net.', 'lin'))} == {
    'scaling_layer.shift',
    'scaling_layer.scale',
  }
  # KL models also carry the loss's scalar logvar; the LDM loss config keeps its init (0).
  has_logvar = any(k == 'loss.logvar' for k, _ in rows)
  assert has_logvar == (config.first_stage.kind == 'kl')
