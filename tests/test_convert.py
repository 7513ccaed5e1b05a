"""The CompVis converter: every key of every released model's state dict (tests/data listings) is
consumed or deliberately ignored, EMA weights are picked up, schedules are checked, errors name the
problem; a converted workdir samples with sample.py."""

import numpy as np
import pytest

from ldm_jax.convert import compvis as convert
from ldm_jax.convert.torch_names import ConversionError
from ldm_jax.latent_diffusion import build_schedule
from tests.helpers import compvis_ldm_state_dict
from tests.test_architecture import reference_keys
from tests.test_released_first_stages import RELEASED
from tests.test_released_models import LDMS, _config


def _listing_state_dict(listing, config, fill=None):
  """A state dict with every key of the listing; arrays are zero-size-in-memory broadcasts (or
  ``fill(key, shape)``), schedule buffers are the config's (the converter checks them)."""
  sched = build_schedule(config) if config.stage == 'ldm' else None
  sd = {}
  for key, shape in reference_keys(listing, ''):
    if sched is not None and key in convert.SCHEDULE_BUFFERS:
      sd[key] = np.asarray(getattr(sched, key), np.float32)
    elif key.endswith(('num_batches_tracked', 'num_updates')):
      sd[key] = np.zeros(shape, np.int64)
    elif fill is not None:
      sd[key] = fill(key, shape)
    else:
      sd[key] = np.broadcast_to(np.float32(0.5), shape)
  return sd


@pytest.mark.parametrize('listing', sorted(LDMS))
def test_every_key_of_every_released_ldm_is_consumed(listing):
  config = _config(LDMS[listing][0])
  sd = _listing_state_dict(listing, config)
  out = convert.convert_ldm(sd, config)
  assert out['used'] | out['ignored'] == set(sd) and not out['used'] & out['ignored']
  assert (out['ema_params'] is not None) == any(k.startswith('model_ema.diffusion') for k in sd)
  if 'scale_factor' in sd:
    assert out['scale_factor'] == 0.5
  else:
    assert out['scale_factor'] == config.diffusion.scale_factor


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_every_key_of_every_released_first_stage_is_consumed(name):
  config = _config(name)
  listing = f'models-first_stage_models-{RELEASED[name][0]}-config'
  sd = _listing_state_dict(listing, config)
  out = convert.convert_first_stage(sd, config)
  assert out['used'] | out['ignored'] == set(sd)
  assert 'disc' in out['loss'] and all(k.startswith('loss.') for k in out['ignored'])


def _small_ldm_config():
  from ldm_jax.configs import digits_ldm

  c = digits_ldm.get_config()
  c.unet.update(dict(model_channels=32, num_head_channels=16, context_dim=32))
  c.cond_stage.embed_dim = 32
  return c


def test_convert_small_ldm_roundtrip_and_sample(tmp_path):
  config = _small_ldm_config()
  sd = compvis_ldm_state_dict(config, scale_factor=0.75)
  # an EMA copy that differs from the raw weights
  for k in [k for k in sd if k.startswith('model.diffusion_model.')]:
    sd['model_ema.' + k[len('model.') :].replace('.', '')] = sd[k] * 0.5
  sd['model_ema.decay'] = np.float32(0.9999)
  sd['model_ema.num_updates'] = np.int32(10)
  out = convert.convert_ldm(sd, config)
  conv_in = out['params']['unet']['input_blocks_0_0']['kernel']
  np.testing.assert_array_equal(
    conv_in, np.transpose(sd['model.diffusion_model.input_blocks.0.0.weight'], (2, 3, 1, 0))
  )
  np.testing.assert_array_equal(
    out['ema_params']['unet']['input_blocks_0_0']['kernel'], conv_in * 0.5
  )
  assert out['scale_factor'] == 0.75 and out['ignored'] == set(convert.IGNORED_KEYS)

  from safetensors.numpy import save_file

  path = str(tmp_path / 'model.safetensors')
  save_file({k: np.ascontiguousarray(np.asarray(v)) for k, v in sd.items()}, path)
  workdir = str(tmp_path / 'converted')
  report = convert.convert_compvis(path, config, workdir)
  assert report['ema'] and report['used'] + len(report['ignored']) == len(sd)
  import ldm_jax

  pipe = ldm_jax.load(workdir)
  assert float(pipe.scale_factor) == 0.75
  np.testing.assert_allclose(
    np.asarray(pipe.params['unet']['input_blocks_0_0']['kernel']), conv_in * 0.5
  )  # sampling uses the EMA weights by default
  with pytest.raises(FileExistsError, match='new --out'):
    convert.convert_compvis(path, config, workdir)
  # No optimizer state is written (Adam's zeros would be two more copies of the weights); a run
  # that resumes the workdir makes it (test_train_tasks trains in converted workdirs).
  from ldm_jax.checkpoint import load_raw

  assert load_raw(workdir)[2]['opt_state'] is None


def test_a_float16_file_converts_and_its_schedule_is_checked_at_float16_precision(tmp_path):
  """Every tensor of a float16 safetensors file (its schedule buffers rounded to float16 too)
  converts, read lazily; a wrong schedule is still refused."""
  from safetensors.numpy import save_file

  from ldm_jax.tensor_files import LazyTensor

  config = _small_ldm_config()
  sd = compvis_ldm_state_dict(config)
  path = str(tmp_path / 'half.safetensors')
  save_file({k: np.asarray(v, np.float16) for k, v in sd.items()}, path)
  lazy, _ = convert.read_state_dict(path)
  assert all(isinstance(v, LazyTensor) and v.dtype == np.float32 for v in lazy.values())
  out = convert.convert_ldm(lazy, config)
  k = out['params']['unet']['input_blocks_0_0']['kernel']
  w = sd['model.diffusion_model.input_blocks.0.0.weight'].astype(np.float16).astype(np.float32)
  np.testing.assert_array_equal(k, np.transpose(w, (2, 3, 1, 0)))
  bad = {k: np.asarray(v, np.float16) for k, v in sd.items()}
  bad['betas'] = (sd['betas'] * 1.01).astype(np.float16)
  save_file(bad, path)
  with pytest.raises(ConversionError, match='betas differ'):
    convert.convert_ldm(convert.read_state_dict(path)[0], config)


def test_conversion_errors_name_the_problem():
  config = _small_ldm_config()
  sd = compvis_ldm_state_dict(config)
  bad = dict(sd, betas=sd['betas'] * 1.1)
  with pytest.raises(ConversionError, match='betas differ'):
    convert.convert_ldm(bad, config)
  extra = dict(sd, **{'some.other.weight': np.zeros(2, np.float32)})
  with pytest.raises(ConversionError, match='some.other.weight'):
    convert.convert_ldm(extra, config)
  missing = {k: v for k, v in sd.items() if k != 'model.diffusion_model.out.2.weight'}
  with pytest.raises(ConversionError, match='out_2/kernel'):
    convert.convert_ldm(missing, config)
  other = _small_ldm_config()
  other.unet.model_channels = 64
  with pytest.raises(ConversionError, match='shape mismatches'):
    convert.convert_ldm(sd, other)
