"""Architectures equal the reference's: parameter counts, and every CompVis state-dict key maps to
exactly one Flax leaf of the right shape (listings dumped from the reference code, tests/data)."""

import gzip
import os

import jax
import jax.numpy as jnp
import pytest
from flax.traverse_util import flatten_dict

from ldm_jax.config import UNetConfig
from ldm_jax.configs import lsun_churches
from ldm_jax.configs.released import kl_f8
from ldm_jax.convert import torch_names
from ldm_jax.nn.autoencoder import VQModel
from ldm_jax.nn.unet import UNetModel
from ldm_jax.summary import param_counts

DATA = os.path.join(os.path.dirname(__file__), 'data')


def reference_keys(name, prefix):
  rows = []
  with gzip.open(os.path.join(DATA, name + '.txt.gz'), 'rt') as f:
    for line in f:
      if line.startswith('#'):
        continue
      key, shape, _ = line.rstrip('\n').split('\t')
      if key.startswith(prefix):
        rows.append((key[len(prefix) :], tuple(int(x) for x in shape.strip('[]').split(',') if x)))
  assert rows
  return rows


def assert_maps_one_to_one(params, rows):
  flat = {k: v.shape for k, v in flatten_dict(params).items()}
  hit = {}
  for key, shape in rows:
    found = torch_names.flax_leaf_for(params, key)
    assert found is not None, f'no Flax leaf for {key}'
    path, kind = found
    assert flat[path] == torch_names.expected_flax_shape(shape, kind), key
    assert path not in hit, f'{key} and {hit.get(path)} map to the same leaf'
    hit[path] = key
  assert set(flat) == set(hit), f'Flax leaves without a reference key: {set(flat) - set(hit)}'


def test_param_counts_churches_and_kl_f8():
  counts = param_counts(lsun_churches.get_config())
  assert counts['unet'] == 294_966_916
  assert counts['first_stage'] == 83_653_863
  assert counts['first_stage_parts']['encoder'] == 34_163_592  # 34.16M
  assert counts['first_stage_parts']['decoder'] == 49_490_179  # 49.49M
  assert counts['cond_stage'] == 0
  assert param_counts(kl_f8.get_config())['first_stage'] == 83_653_863


def _shapes(config):
  from ldm_jax.latent_diffusion import build_first_stage, build_unet, latent_shape

  key = jax.random.PRNGKey(0)
  unet = build_unet(config)
  x = jnp.zeros((1,) + latent_shape(config))
  up = jax.eval_shape(lambda k: unet.init(k, x, jnp.zeros((1,), jnp.int32)), key)['params']
  fs = build_first_stage(config.first_stage)
  fp = jax.eval_shape(lambda k: fs.init(k, jnp.zeros((1, 256, 256, 3))), key)['params']
  return up, fp


def test_churches_keys_and_shapes_match_reference():
  unet_params, fs_params = _shapes(lsun_churches.get_config())
  name = 'configs-latent-diffusion-lsun_churches-ldm-kl-8'
  assert_maps_one_to_one(unet_params, reference_keys(name, 'model.diffusion_model.'))
  assert_maps_one_to_one(fs_params, reference_keys(name, 'first_stage_model.'))


@pytest.mark.parametrize(
  'name,kwargs,res,ctx',
  [
    (
      'configs-latent-diffusion-cin256-v2',  # SpatialTransformer, 1 head, cross-attention
      dict(
        in_channels=3,
        out_channels=3,
        model_channels=192,
        attention_resolutions=(8, 4, 2),
        channel_mult=(1, 2, 3, 5),
        num_heads=1,
        use_spatial_transformer=True,
        context_dim=512,
      ),
      64,
      (1, 512),
    ),
    (
      'models-ldm-celeba256-config',  # AttentionBlock by num_head_channels (legacy QKV)
      dict(
        in_channels=3,
        out_channels=3,
        model_channels=224,
        attention_resolutions=(8, 4, 2),
        channel_mult=(1, 2, 3, 4),
        num_head_channels=32,
      ),
      64,
      None,
    ),
  ],
)
def test_unet_variants_match_reference(name, kwargs, res, ctx):
  unet = UNetModel(UNetConfig(num_res_blocks=2, **kwargs))
  args = [jnp.zeros((1, res, res, kwargs['in_channels'])), jnp.zeros((1,), jnp.int32)]
  if ctx:
    args.append(jnp.zeros((1,) + ctx))
  params = jax.eval_shape(unet.init, jax.random.PRNGKey(0), *args)['params']
  assert_maps_one_to_one(params, reference_keys(name, 'model.diffusion_model.'))


def test_vq_f8_matches_reference():
  model = VQModel(
    embed_dim=4, n_embed=16384, z_channels=4, ch_mult=(1, 2, 2, 4), attn_resolutions=(32,)
  )
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3)))['params']
  rows = [
    r
    for r in reference_keys('models-first_stage_models-vq-f8-config', '')
    if not r[0].startswith('loss.')
  ]  # LPIPS/discriminator live in the loss, not the model
  assert_maps_one_to_one(params, rows)
