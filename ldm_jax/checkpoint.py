"""Orbax checkpoints of a run: the train state, the config (JSON) and, for LDM runs, the frozen first
stage's parameters, so that a workdir alone is enough to resume and to sample."""

from __future__ import annotations

import dataclasses
import logging
import time

import jax
import orbax.checkpoint as ocp
from etils import epath

from ldm_jax import storage
from ldm_jax.config import state_defining_differences, to_json_dict
from ldm_jax.errors import UserError

log = logging.getLogger('ldm_jax')


class CheckpointMismatch(UserError):
  """A checkpoint written by another model config."""


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


class CheckpointUnreadable(UserError):
  """A checkpoint could not be read for a reason other than damage (storage, memory): left in
  place, the run stops; the next launch tries again."""


RETRY_S = (2, 8, 30)  # waits before reading a checkpoint again after a transient storage error


class Checkpointer:
  """The run's CheckpointManager: async saves (the step goes on while arrays are written),
  atomic (a step directory appears only when complete: a crash mid-save leaves the previous
  checkpoint as the newest), the newest ``max_to_keep`` plus every ``keep_every``-th step kept.
  Every process takes part in saving and restoring its shards."""

  def __init__(
    self,
    workdir: str,
    max_to_keep: int = 3,
    async_save: bool = True,
    keep_every: int = 0,
    save_concurrent_gb: int | None = None,
  ):
    """``save_concurrent_gb``: at most this many GB of arrays in flight while saving (Orbax's
    default, 96, lets it copy every array at once: the converter, whose weights are all on the
    host already, sets 1)."""
    _array_handler_for_backend()
    self.workdir = storage.resolve(workdir)
    self.directory = storage.join(self.workdir, 'checkpoints')
    self.protected: set[int] = set()  # kept whatever the policy says (train: before a NaN streak)
    policies = [_LatestN(max_to_keep), _Steps(self.protected)]
    if keep_every:
      policies.append(_EveryN(keep_every))
    self._options = ocp.CheckpointManagerOptions(
      preservation_policy=_AnyOf(policies),
      create=True,
      enable_async_checkpointing=async_save,
      cleanup_tmp_directories=True,
    )  # what a killed save left behind
    self._handlers = None
    if save_concurrent_gb is not None:
      self._handlers = {
        name: ocp.StandardCheckpointHandler(save_concurrent_gb=save_concurrent_gb)
        for name in ('state', 'first_stage')
      }
      self._handlers.update(config=ocp.JsonCheckpointHandler(), data=ocp.JsonCheckpointHandler())
    self.manager = ocp.CheckpointManager(
      self.directory, options=self._options, item_handlers=self._handlers
    )

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
    """Restore into abstract targets (ShapeDtypeStructs with shardings: arrays are resharded).
    A checkpoint saved without optimizer state (a converted workdir) gives ``opt_state=None``:
    the caller makes a fresh one."""
    if abstract_state.opt_state is not None and not self.has_optimizer_state(step):
      abstract_state = abstract_state.replace(opt_state=None)
    items = {'state': ocp.args.StandardRestore(abstract_state)}
    if abstract_first_stage is not None:
      items['first_stage'] = ocp.args.StandardRestore(abstract_first_stage)
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    return out['state'], out.get('first_stage') if abstract_first_stage is not None else None

  def has_optimizer_state(self, step: int) -> bool:
    meta = ocp.StandardCheckpointHandler().metadata(
      epath.Path(self.directory) / str(step) / 'state'
    )
    return bool(jax.tree.leaves(getattr(meta, 'tree', meta).get('opt_state')))

  def restore_newest_readable(self, config, abstract_state, abstract_first_stage=None):
    """(step, state, first_stage, data_state) of the newest checkpoint that reads back, or None
    for a new run. An unreadable one (a truncated or corrupt file, e.g. a disk that filled up) is
    moved to WORKDIR/corrupt_checkpoints/ with a warning naming it, and the one before is tried.
    When none reads back (now, or in an earlier launch: corrupt_checkpoints/ holds some and
    checkpoints/ none) the run does not silently start over: an error says what happened. A
    checkpoint of another model config is an error (CheckpointMismatch), not skipped."""
    steps = self.all_steps()
    for i, step in enumerate(reversed(steps)):
      for attempt in range(len(RETRY_S) + 1):
        try:
          self.check_compatible(step, config)
          state, first_stage = self.restore(step, abstract_state, abstract_first_stage)
          return step, state, first_stage, self.data_state(step)
        except CheckpointMismatch:
          raise
        except Exception as e:  # pylint: disable=broad-except  (tensorstore/JSON/OSError/...)
          kind = storage.failure_kind(e)
          if kind == 'transient' and attempt < len(RETRY_S):
            log.warning(
              'reading checkpoint %s/%d failed (%s); a storage hiccup: trying again in %d s',
              self.directory,
              step,
              storage.first_line(e),
              RETRY_S[attempt],
            )
            time.sleep(RETRY_S[attempt])
            continue
          if kind != 'corrupt':
            raise CheckpointUnreadable(
              f'cannot read checkpoint {self.directory}/{step} ({storage.first_line(e)}). This does not '
              'look like a damaged checkpoint ('
              + ('the storage kept failing' if kind == 'transient' else 'memory or permissions')
              + '), so it was left in place: fix the cause and run the same command again. If '
              f'it is damaged after all, move it to {self.workdir}/corrupt_checkpoints/ and the '
              'run resumes from the one before.'
            ) from e
          self._quarantine(step, e, steps[len(steps) - 2 - i] if i + 1 < len(steps) else None)
          break
    lost = storage.join(self.workdir, 'corrupt_checkpoints')
    if storage.isdir(lost) and storage.listdir(lost):
      raise UserError(
        f'no readable checkpoint is left in {self.directory}: the unreadable ones were moved to '
        f'{lost} ({", ".join(storage.listdir(lost))}), so this run cannot resume. To start over '
        f'from step 0, delete or move {lost}, or use a new --workdir.'
      )
    return None

  def _quarantine(self, step: int, error: BaseException, previous: int | None) -> None:
    src = storage.join(self.directory, str(step))
    dst = storage.join(self.workdir, 'corrupt_checkpoints', f'{step}')
    log.warning(
      'checkpoint %s is unreadable (%s: %s); moving it to %s and %s',
      src,
      type(error).__name__,
      (str(error).splitlines() or [''])[0][:200],
      dst,
      f'trying the previous one (step {previous})'
      if previous is not None
      else 'there is no earlier checkpoint',
    )
    if jax.process_index() == 0:
      if storage.exists(dst):
        dst = f'{dst}.{int(time.time())}'
      storage.rename(src, dst)
    _sync(f'ldm_jax_quarantine_{step}')
    self.manager.close()
    self.manager = ocp.CheckpointManager(
      self.directory, options=self._options, item_handlers=self._handlers
    )

  def close(self) -> None:
    # Orbax's close() does not wait for the clean-up of temporary folders that a new manager
    # starts in a thread; a process that exits right after (an error) would see it fail.
    await_cleanup = getattr(self.manager, '_maybe_await_cleanup_tmp_directory', None)
    if await_cleanup is not None:
      await_cleanup()
    self.manager.close()


@dataclasses.dataclass
class _LatestN:
  """Orbax preservation policies: the newest n (n=0: all) ..."""

  n: int

  def should_preserve(self, checkpoints, *, context):
    n = self.n or len(checkpoints)
    return [i >= len(checkpoints) - n for i in range(len(checkpoints))]


@dataclasses.dataclass
class _EveryN:
  """... every step that is a multiple of n ..."""

  n: int

  def should_preserve(self, checkpoints, *, context):
    return [c.step % self.n == 0 for c in checkpoints]


@dataclasses.dataclass
class _Steps:
  """... the steps in a set the trainer changes while it runs ..."""

  steps: set

  def should_preserve(self, checkpoints, *, context):
    return [c.step in self.steps for c in checkpoints]


@dataclasses.dataclass
class _AnyOf:
  """... and any checkpoint that one of them keeps."""

  policies: list

  def should_preserve(self, checkpoints, *, context):
    votes = [p.should_preserve(checkpoints, context=context) for p in self.policies]
    return [any(v) for v in zip(*votes)]


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def locate(path: str) -> tuple[str, int | None]:
  """(workdir, step or None) of a run's path as users give it: the workdir, its checkpoints/
  folder, or one step folder in it (WORKDIR/checkpoints/1000)."""
  path = storage.resolve(path).rstrip('/')
  head, name = path.rsplit('/', 1) if '/' in path else ('', path)
  if name.isdigit() and head.endswith('/checkpoints'):
    return head[: -len('/checkpoints')], int(name)
  if name == 'checkpoints':
    return head, None
  return path, None


def load_raw(path: str, step: int | None = None):
  """(config dict, step, state as nested dicts of numpy arrays, first_stage params or None) of a
  run, without knowing its model: for loading a trained first stage or sampling from a workdir.
  ``path``: see ``locate``. Without a step, the newest checkpoint that reads back: an unreadable
  newer one is skipped with a warning naming it (nothing is moved; that is train.py's job)."""
  workdir, step_in_path = locate(path)
  step = step_in_path if step is None else step
  directory = storage.join(workdir, 'checkpoints')
  if not storage.isdir(directory) or not storage.listdir(directory):
    raise UserError(
      f'no checkpoints in {workdir!r}: expected {directory}/<step> written by train.py '
      '(python train.py --config=... --workdir=...) or python -m ldm_jax.convert'
    )
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    steps = ckpt.all_steps()
    if step is not None and step not in steps:
      raise UserError(f'no checkpoint at step {step} in {directory}; there are steps {steps}')
    tried = []
    for s in [step] if step is not None else reversed(steps):
      try:
        return _read(ckpt, s)
      except Exception as e:  # pylint: disable=broad-except  (tensorstore/JSON/OSError/...)
        reason = f'{type(e).__name__}: {(str(e).splitlines() or [""])[0][:200]}'
        tried.append(s)
        if step is not None:
          raise UserError(
            f'checkpoint {directory}/{s} is unreadable ({reason}); choose another with --step '
            f'(steps: {steps})'
          ) from e
        log.warning(
          'checkpoint %s/%d is unreadable (%s); using the newest readable one before it '
          '(--step chooses one)',
          directory,
          s,
          reason,
        )
    raise UserError(f'none of the checkpoints in {directory} reads back (steps {tried})')
  finally:
    ckpt.close()


def _read(ckpt: Checkpointer, step: int):
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
