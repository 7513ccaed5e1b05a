"""Every released CompVis model (all 32 state-dict listings in ../shared/reference/
compvis_state_dicts, copied to tests/data) is built exactly by a config under configs/released:
each reference key of the UNet, first stage and conditioning encoder has one Flax leaf of the right
shape and the reverse, and the parameter counts equal the reference's."""

import functools
import importlib

import jax
import jax.numpy as jnp
import pytest

from ldm_jax import export
from ldm_jax.config import validate
from ldm_jax.latent_diffusion import abstract_params, build_first_stage
from ldm_jax.nn.params import count_params
from ldm_jax.summary import param_counts
from tests.test_architecture import assert_maps_one_to_one, reference_keys

# listing -> (config under configs/released, UNet params in M (the reference's model cards and logs), cond stage params)
LDMS = {
  'models-ldm-celeba256-config': ('celeba256', 274.06, 0),
  'configs-latent-diffusion-celebahq-ldm-vq-4': ('celeba256', 274.06, 0),
  'models-ldm-ffhq256-config': ('ffhq256', 274.06, 0),
  'configs-latent-diffusion-ffhq-ldm-vq-4': ('ffhq256', 274.06, 0),
  'models-ldm-lsun_beds256-config': ('lsun_beds256', 274.06, 0),
  'configs-latent-diffusion-lsun_bedrooms-ldm-vq-4': ('lsun_beds256', 274.06, 0),
  'models-ldm-lsun_churches256-config': ('lsun_churches256', 294.97, 0),
  'configs-latent-diffusion-lsun_churches-ldm-kl-8': ('lsun_churches256', 294.97, 0),
  'models-ldm-cin256-config': ('cin256', 394.98, 512_000),
  'configs-latent-diffusion-cin-ldm-vq-f8': ('cin256', 394.98, 512_000),
  'configs-latent-diffusion-cin256-v2': ('cin256_v2', 400.92, 512_512),
  'models-ldm-text2img256-config': ('text2img256', 403.62, 186_154_682),
  'configs-latent-diffusion-txt2img-1p4B-eval': ('txt2img_1p4b', 872.30, 581_994_042),
  'models-ldm-bsr_sr-config': ('bsr_sr', 113.62, 0),
  'models-ldm-inpainting_big-config': ('inpainting_big', 387.25, 0),
  'models-ldm-layout2img-openimages256-config': ('layout2img_openimages256', 246.28, 58_858_496),
  'models-ldm-semantic_synthesis256-config': ('semantic_synthesis256', 215.23, 546),
  'models-ldm-semantic_synthesis512-config': ('semantic_synthesis512', 215.23, 546),
  'configs-retrieval-augmented-diffusion-768x768': ('rdm_768', 1335.48, 0),
}
# configs/autoencoder/*.yaml train the same architectures as the released first stages.
AUTOENCODERS = {
  'configs-autoencoder-autoencoder_kl_64x64x3': 'kl_f4',
  'configs-autoencoder-autoencoder_kl_32x32x4': 'kl_f8',
  'configs-autoencoder-autoencoder_kl_16x16x16': 'kl_f16',
  'configs-autoencoder-autoencoder_kl_8x8x64': 'kl_f32',
}


def _config(name):
  return importlib.import_module(f'ldm_jax.configs.released.{name}').get_config()


@functools.lru_cache(maxsize=None)
def _shapes_and_counts(name):
  config = _config(name)
  shapes = abstract_params(config)
  return (shapes['unet'], shapes['first_stage'], shapes['cond_stage']), param_counts(config)


@pytest.mark.parametrize('listing', sorted(LDMS))
def test_released_ldm_matches_reference_state_dict(listing):
  name, unet_m, cond_n = LDMS[listing]
  config = _config(name)
  with pytest.raises(ValueError, match='data.path') if config.data.source == 'folder' else _none():
    validate(config)  # image-folder datasets: the user names the folder
  config.data.path = '/data/images'
  validate(config)
  (unet_params, fs_params, cond_params), counts = _shapes_and_counts(name)
  assert_maps_one_to_one(unet_params, reference_keys(listing, 'model.diffusion_model.'))
  assert_maps_one_to_one(fs_params, reference_keys(listing, 'first_stage_model.'))
  cond_rows = [r for r in _rows(listing, 'cond_stage_model.')]
  if config.cond_stage.kind == 'first_stage':  # the same module object: an identical copy
    assert_maps_one_to_one(fs_params, cond_rows)
  elif cond_params is None:
    assert cond_rows == []
  else:
    assert_maps_one_to_one(cond_params, cond_rows)
  assert round(count_params(unet_params) / 1e6, 2) == unet_m
  assert counts['unet'] == count_params(unet_params) and counts['cond_stage'] == cond_n
  # The EMA copy holds one entry per UNet parameter (dotless names), when the model has EMA.
  ema = [k for k, _ in _rows(listing, 'model_ema.') if k not in ('decay', 'num_updates')]
  assert len(ema) == (
    len(reference_keys(listing, 'model.diffusion_model.')) if config.training.use_ema else 0
  )
  # python -m ldm_jax.export writes exactly the reference's names and shapes (EMA included)
  cond = {'unet': unet_params, 'cond_stage': cond_params}
  exported = export.compvis_state_dict(
    config, cond, fs_params, ema_params=cond if config.training.use_ema else None
  )
  want = {k: tuple(shape) for k, shape in _rows(listing, '')}
  assert {k: tuple(v.shape) for k, v in exported.items()} == want


def _none():
  import contextlib

  return contextlib.nullcontext()


def _rows(listing, prefix):
  try:
    return reference_keys(listing, prefix)
  except AssertionError:  # reference_keys insists on a non-empty result
    return []


@pytest.mark.parametrize('listing', sorted(AUTOENCODERS))
def test_autoencoder_training_configs_match_released_first_stages(listing):
  config = _config(AUTOENCODERS[listing])
  model = build_first_stage(config.first_stage)
  params = jax.eval_shape(
    lambda k: model.init(k, jnp.zeros((1, 256, 256, 3)))['params'], jax.random.PRNGKey(0)
  )
  rows = [(k, s) for k, s in reference_keys(listing, '') if not k.startswith('loss.')]
  assert_maps_one_to_one(params, rows)


def test_every_listing_is_covered():
  import os

  from tests.test_architecture import DATA
  from tests.test_released_first_stages import RELEASED

  names = {f[: -len('.txt.gz')] for f in os.listdir(DATA) if f.endswith('.txt.gz')}
  covered = (
    set(LDMS)
    | set(AUTOENCODERS)
    | {f'models-first_stage_models-{folder}-config' for folder, _, _ in RELEASED.values()}
  )
  assert names == covered and len(names) == 32
