"""Orbax checkpoints of a run: the train state, the config (JSON) and, for LDM runs, the frozen first
stage's parameters, so that a workdir alone is enough to resume and to sample."""
from __future__ import annotations

import os

import jax
from etils import epath
import orbax.checkpoint as ocp

from ldm_jax.config import state_defining_differences, to_json_dict


class CheckpointMismatch(ValueError):
  pass


_HANDLER_SET = False


def _array_handler_for_backend() -> None:
  """On CPU, save each replicated array from one replica: Orbax's replica-parallel default slices
  every array per device with a compiled slice per shape (~25 s for a small UNet on 8 host
  devices). GPU runs already default to this; TPU keeps replica-parallel writes."""
  global _HANDLER_SET
  if not _HANDLER_SET and jax.default_backend() == 'cpu':
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)
  _HANDLER_SET = True


class Checkpointer:
  def __init__(self, workdir: str, max_to_keep: int = 3, async_save: bool = True):
    _array_handler_for_backend()
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, config, first_stage_params=None, force: bool = False) -> None:
    items = {'state': ocp.args.StandardSave(state),
             'config': ocp.args.JsonSave(to_json_dict(config))}
    if first_stage_params is not None:
      items['first_stage'] = ocp.args.StandardSave(first_stage_params)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def saved_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def check_compatible(self, step: int, config) -> None:
    diffs = state_defining_differences(self.saved_config(step), to_json_dict(config))
    if diffs:
      raise CheckpointMismatch(
          f'the checkpoint at step {step} in {self.directory} was written by a different model '
          'config:\n  ' + '\n  '.join(diffs) + '\nUse a new --workdir for this config, or pass '
          'the config the run was started with.')

  def restore(self, step: int, abstract_state, abstract_first_stage=None):
    """Restore into abstract targets (ShapeDtypeStructs with shardings: arrays are resharded)."""
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if abstract_first_stage is not None:
      items['first_stage'] = ocp.args.StandardRestore(abstract_first_stage)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    return out['state'], out.get('first_stage') if abstract_first_stage is not None else None

  def close(self) -> None:
    self.manager.close()


def load_raw(workdir: str, step: int | None = None):
  """(config dict, state as nested dicts of numpy arrays, first_stage params or None) of a run,
  without knowing its model: for loading a trained first stage or sampling from a workdir."""
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise FileNotFoundError(f'no checkpoints in {workdir!r}: expected {workdir}/checkpoints/<step> '
                            'written by train.py (python train.py --config=... --workdir=...)')
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {ckpt.directory}: train there first '
                              '(python train.py --config=... --workdir=...)')
    config = ckpt.saved_config(step)
    items = {}
    for name in ('state', 'first_stage'):
      if os.path.isdir(os.path.join(ckpt.directory, str(step), name)):
        items[name] = ocp.args.StandardRestore(_local_target(ckpt.directory, step, name))
    out = ckpt.manager.restore(step, args=ocp.args.Composite(**items))
    return config, step, jax.device_get(out['state']), (
        jax.device_get(out['first_stage']) if 'first_stage' in items else None)
  finally:
    ckpt.close()


def _local_target(directory: str, step: int, item: str):
  """Abstract arrays for ``item`` from its metadata, on this process's first device: a run saved
  on N devices (or another host layout) restores anywhere, e.g. for sampling or evaluation."""
  meta = ocp.StandardCheckpointHandler().metadata(epath.Path(directory) / str(step) / item)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                      getattr(meta, 'tree', meta), is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'))
