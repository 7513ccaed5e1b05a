"""ldm_jax.checkpoint alone: a save reads back into abstract targets with its config, first stage
and data position; the keep policy; a corrupt newest checkpoint is quarantined and the previous
one restored; another model config is an error; load_raw reads a workdir without a model."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax.train.state import TrainState
from tests.helpers import tiny_ldm_config


def _state(value: float) -> TrainState:
  params = {'w': jnp.full((4, 3), value), 'b': jnp.arange(3.0)}
  return TrainState.create(params, optax.adam(1e-3), True, 0.5)


def _abstract(state):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)


def test_save_restore_roundtrip_with_first_stage_and_data_position(tmp_path):
  config = tiny_ldm_config()
  ck = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=2, async_save=False, keep_every=2)
  first_stage = {'enc': jnp.ones((2, 2))}
  for step in (1, 2, 3, 4, 5):
    ck.save(step, _state(float(step)), config, first_stage, data_state={'position': 8 * step})
  ck.wait()
  assert ck.all_steps() == [2, 4, 5]  # the newest 2, plus every 2nd
  step, state, fs, data = ck.restore_newest_readable(
    config, _abstract(_state(0.0)), _abstract(first_stage)
  )
  assert step == 5 and data == {'position': 40}
  np.testing.assert_array_equal(state.params['w'], np.full((4, 3), 5.0))
  np.testing.assert_array_equal(fs['enc'], np.ones((2, 2)))
  saved, raw_step, raw_state, raw_fs = ckpt_lib.load_raw(str(tmp_path))
  assert raw_step == 5 and saved['stage'] == 'ldm' and float(raw_state['scale_factor']) == 0.5
  ck.close()


def test_corrupt_newest_is_quarantined_and_other_configs_refused(tmp_path):
  config = tiny_ldm_config()
  ck = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3, async_save=False)
  ck.save(1, _state(1.0), config)
  ck.save(2, _state(2.0), config)
  ck.wait()
  for dirpath, _, files in os.walk(os.path.join(ck.directory, '2', 'state')):
    for f in files:  # truncate every array file of the newest checkpoint
      open(os.path.join(dirpath, f), 'wb').close()
  step, state, _, _ = ck.restore_newest_readable(config, _abstract(_state(0.0)))
  assert step == 1 and float(state.params['w'][0, 0]) == 1.0
  assert os.path.isdir(os.path.join(str(tmp_path), 'corrupt_checkpoints', '2'))
  other = tiny_ldm_config()
  other.unet.model_channels = 64
  with pytest.raises(ckpt_lib.CheckpointMismatch, match='unet.model_channels'):
    ck.restore_newest_readable(other, _abstract(_state(0.0)))
  ck.close()


@pytest.mark.parametrize(
  'failures, error, outcome',
  [
    (2, ConnectionError('Connection reset by peer'), 'restored'),  # a storage hiccup: retried
    (2, ValueError('UNAVAILABLE: 503 Service Unavailable'), 'restored'),
    (9, TimeoutError('timed out'), 'stops'),  # the storage keeps failing: stop, move nothing
    (1, MemoryError(), 'stops'),  # not a damaged checkpoint: stop with the cause
    (1, ValueError('DATA_LOSS: Error reading "params.w/0.0": truncated'), 'quarantined'),
  ],
)
def test_only_a_damaged_checkpoint_is_set_aside(tmp_path, monkeypatch, failures, error, outcome):
  """A restore that fails is retried when the storage failed, stops with the cause when memory or
  anything else did, and sets the checkpoint aside only on evidence of damage."""
  config = tiny_ldm_config()
  ck = ckpt_lib.Checkpointer(str(tmp_path), max_to_keep=3, async_save=False)
  ck.save(1, _state(1.0), config)
  ck.save(2, _state(2.0), config)
  ck.wait()
  monkeypatch.setattr(ckpt_lib, 'RETRY_S', (0, 0, 0))
  real, calls = ck.restore, []

  def flaky(step, *args):
    calls.append(step)
    if step == 2 and len(calls) <= failures:
      raise error
    return real(step, *args)

  monkeypatch.setattr(ck, 'restore', flaky)
  quarantined = os.path.join(str(tmp_path), 'corrupt_checkpoints', '2')
  if outcome == 'stops':
    with pytest.raises(ckpt_lib.CheckpointUnreadable, match='left in place'):
      ck.restore_newest_readable(config, _abstract(_state(0.0)))
    assert not os.path.exists(quarantined) and ck.all_steps() == [1, 2]
  else:
    step, state, _, _ = ck.restore_newest_readable(config, _abstract(_state(0.0)))
    assert step == (2 if outcome == 'restored' else 1)
    assert os.path.exists(quarantined) == (outcome == 'quarantined')
    assert float(state.params['w'][0, 0]) == float(step)
  ck.close()
