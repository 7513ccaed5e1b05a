"""Orbax checkpoints of a run: the train state, the config (JSON) and, for LDM runs, the frozen first
stage's parameters, so that a workdir alone is enough to resume and to sample."""

from __future__ import annotations

import logging
import time

import jax
from etils import epath
import orbax.checkpoint as ocp

from ldm_jax import storage
from ldm_jax.config import state_defining_differences, to_json_dict

log = logging.getLogger('ldm_jax')


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
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
    )
  _HANDLER_SET = True


class Checkpointer:
  """The run's CheckpointManager: async saves (the step goes on while arrays are written),
  atomic (a step directory appears only when complete: a crash mid-save leaves the previous
  checkpoint as the newest), the newest ``max_to_keep`` plus every ``keep_every``-th step kept.
  Every process takes part in saving and restoring its shards."""

  def __init__(
    self, workdir: str, max_to_keep: int = 3, async_save: bool = True, keep_every: int = 0
  ):
    _array_handler_for_backend()
    self.workdir = storage.resolve(workdir)
    self.directory = storage.join(self.workdir, 'checkpoints')
    self._options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      keep_period=keep_every or None,
      create=True,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
    )  # what a killed save left behind
    self.manager = ocp.CheckpointManager(self.directory, options=self._options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(
    self,
    step: int,
    state,
    config,
    first_stage_params=None,
    force: bool = False,
    data_state: dict | None = None,
  ) -> None:
    """``data_state``: the input pipeline's position (JSON), restored with the state."""
    items = {
      'state': ocp.args.StandardSave(state),
      'config': ocp.args.JsonSave(to_json_dict(config)),
    }
    if first_stage_params is not None:
      items['first_stage'] = ocp.args.StandardSave(first_stage_params)
    if data_state is not None:
      items['data'] = ocp.args.JsonSave(data_state)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    """True on every process at the same step once any was told it will be preempted (JAX's
    preemption sync point; needs jax.distributed)."""
    return self.manager.reached_preemption(step)

  def saved_config(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
      'config'
    ]

  def data_state(self, step: int) -> dict | None:
    if not storage.isdir(storage.join(self.directory, str(step), 'data')):
      return None  # written before the data position was stored
    return self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))['data']

  def check_compatible(self, step: int, config) -> None:
    diffs = state_defining_differences(self.saved_config(step), to_json_dict(config))
    if diffs:
      raise CheckpointMismatch(
        f'the checkpoint at step {step} in {self.directory} was written by a different model '
        'config:\n  ' + '\n  '.join(diffs) + '\nUse a new --workdir for this config, or pass '
        'the config the run was started with.'
      )

  def restore(self, step: int, abstract_state, abstract_first_stage=None):
    """Restore into abstract targets (ShapeDtypeStructs with shardings: arrays are resharded)."""
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if abstract_first_stage is not None:
      items['first_stage'] = ocp.args.StandardRestore(abstract_first_stage)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    return out['state'], out.get('first_stage') if abstract_first_stage is not None else None

  def restore_newest_readable(self, config, abstract_state, abstract_first_stage=None):
    """(step, state, first_stage, data_state) of the newest checkpoint that reads back, or None
    when there is none. An unreadable one (a truncated or corrupt file, e.g. a disk that filled
    up) is moved to WORKDIR/corrupt_checkpoints/ with a warning naming it, and the one before is
    tried. A checkpoint of another model config is an error (CheckpointMismatch), not skipped."""
    for step in reversed(self.all_steps()):
      try:
        self.check_compatible(step, config)
        state, first_stage = self.restore(step, abstract_state, abstract_first_stage)
        return step, state, first_stage, self.data_state(step)
      except CheckpointMismatch:
        raise
      except Exception as e:  # pylint: disable=broad-except  (tensorstore/JSON/OSError/...)
        self._quarantine(step, e)
    return None

  def _quarantine(self, step: int, error: Exception) -> None:
    src = storage.join(self.directory, str(step))
    dst = storage.join(self.workdir, 'corrupt_checkpoints', f'{step}')
    log.warning(
      'checkpoint %s is unreadable (%s: %s); moving it to %s and falling back to the '
      'previous checkpoint',
      src,
      type(error).__name__,
      (str(error).splitlines() or [''])[0][:200],
      dst,
    )
    if jax.process_index() == 0:
      if storage.exists(dst):
        dst = f'{dst}.{int(time.time())}'
      storage.rename(src, dst)
    _sync(f'ldm_jax_quarantine_{step}')
    self.manager.close()
    self.manager = ocp.CheckpointManager(self.directory, options=self._options)

  def close(self) -> None:
    self.manager.close()


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def load_raw(workdir: str, step: int | None = None):
  """(config dict, state as nested dicts of numpy arrays, first_stage params or None) of a run,
  without knowing its model: for loading a trained first stage or sampling from a workdir."""
  if not storage.isdir(storage.join(workdir, 'checkpoints')):
    raise FileNotFoundError(
      f'no checkpoints in {workdir!r}: expected {workdir}/checkpoints/<step> '
      'written by train.py (python train.py --config=... --workdir=...)'
    )
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(
        f'no checkpoint in {ckpt.directory}: train there first '
        '(python train.py --config=... --workdir=...)'
      )
    config = ckpt.saved_config(step)
    items = {}
    for name in ('state', 'first_stage'):
      if storage.isdir(storage.join(ckpt.directory, str(step), name)):
        items[name] = ocp.args.StandardRestore(_local_target(ckpt.directory, step, name))
    out = ckpt.manager.restore(step, args=ocp.args.Composite(**items))
    return (
      config,
      step,
      jax.device_get(out['state']),
      (jax.device_get(out['first_stage']) if 'first_stage' in items else None),
    )
  finally:
    ckpt.close()


def _local_target(directory: str, step: int, item: str):
  """Abstract arrays for ``item`` from its metadata, on this process's first device: a run saved
  on N devices (or another host layout) restores anywhere, e.g. for sampling or evaluation."""
  meta = ocp.StandardCheckpointHandler().metadata(epath.Path(directory) / str(step) / item)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
    getattr(meta, 'tree', meta),
    is_leaf=lambda x: hasattr(x, 'shape') and hasattr(x, 'dtype'),
  )
