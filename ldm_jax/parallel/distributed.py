"""Multi-process start-up and preemption.

``initialize`` starts jax.distributed (one process per host, or per GPU) before any JAX
computation: explicitly (coordinator address, process count and id, from flags or the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment), or automatically on a
Cloud TPU VM, in a SLURM job of several tasks and under Open MPI (JAX reads the cluster's
environment). ``Preemption`` turns SIGTERM (what TPU maintenance, SLURM and Kubernetes send
before killing a job) into "checkpoint at this step and exit 0".
"""

from __future__ import annotations

import logging
import os
import signal

import jax

from ldm_jax.runtime import SIGTERM, catch_sigterm, on_sigterm

log = logging.getLogger('ldm_jax')


def _cluster_detected() -> str:
  """The name of a multi-process launcher/cluster whose environment JAX can read, or ''."""
  if int(os.environ.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_JOB_ID' in os.environ:
    return 'SLURM'
  if int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1') or 1) > 1:
    return 'Open MPI'
  try:
    from jax._src import cloud_tpu_init

    if cloud_tpu_init.running_in_cloud_tpu_vm:
      return 'Cloud TPU'
  except (ImportError, AttributeError):
    pass
  return ''


def initialize(
  mode: str = 'auto', coordinator_address: str = '', num_processes: int = 0, process_id: int = -1
) -> bool:
  """Start jax.distributed when running as one of several processes; True if started.

  mode 'auto': when an address is given (argument or JAX_COORDINATOR_ADDRESS) or a cluster is
  detected; 'on': always (JAX must then find the rest itself); 'off': never (one process)."""
  if mode not in ('auto', 'on', 'off'):
    raise ValueError(f"--distributed must be 'auto', 'on' or 'off', got {mode!r}")
  if mode == 'off':
    return False
  address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  num = num_processes or int(os.environ.get('JAX_NUM_PROCESSES', '0') or 0)
  pid = process_id if process_id >= 0 else int(os.environ.get('JAX_PROCESS_ID', '-1') or -1)
  cluster = _cluster_detected()
  if mode == 'auto' and not address and not cluster:
    return False
  if address and (num <= 0 or pid < 0) and not cluster:
    raise ValueError(
      f'a coordinator address ({address}) needs the number of processes and this '
      "process's id: pass --num_processes=N --process_id=I (or set "
      'JAX_NUM_PROCESSES / JAX_PROCESS_ID)'
    )
  kwargs = {}
  if address:
    kwargs['coordinator_address'] = address
  if num > 0:
    kwargs['num_processes'] = num
  if pid >= 0:
    kwargs['process_id'] = pid
  jax.distributed.initialize(**kwargs)
  log.info(
    'jax.distributed: process %d of %d (%s)',
    jax.process_index(),
    jax.process_count(),
    address or cluster or 'auto-detected',
  )
  return True


class Preemption:
  """Has this job been asked to stop? One process: a SIGTERM handler sets a flag (installed for
  the duration of a ``with`` block unless train.py installed it already). Several processes:
  JAX's preemption sync point, which makes every process stop at the same step
  (``checkpointer.reached_preemption``), and JAX's own SIGTERM handling is left in place."""

  def __init__(self, checkpointer=None):
    self.checkpointer, self._previous = checkpointer, None

  def __enter__(self):
    if jax.process_count() == 1 and signal.getsignal(signal.SIGTERM) is not on_sigterm:
      self._previous = catch_sigterm()
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False

  @property
  def requested(self) -> bool:
    """This process got SIGTERM (one process; several processes: see should_stop)."""
    return jax.process_count() == 1 and SIGTERM.is_set()

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self.checkpointer.reached_preemption(step)
    return SIGTERM.is_set()
