"""Train either LDM stage: python train.py --config=configs/<name>.py --workdir=DIR [--config.k=v ...]

Resumes by itself from the newest checkpoint in WORKDIR. Multi-host (a TPU pod slice, a multi-node
GPU job): run the same command on every host/process with the same WORKDIR (a shared filesystem or
gs:// bucket); jax.distributed starts by itself on Cloud TPU, under SLURM and Open MPI, or from
--coordinator_address/--num_processes/--process_id. See README, "Pods and clusters".
"""

from __future__ import annotations

from ldm_jax.runtime import STARTING, catch_sigterm

catch_sigterm()  # first, before the slow start-up: a job preempted while it starts exits 0 at once
STARTING.set()  # (the loop clears it after its first step)

import logging  # noqa: E402

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from ldm_jax.errors import UserError  # noqa: E402
from ldm_jax.runtime import setup_runtime  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', None, 'Path to a config file under configs/.', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and images.')
flags.DEFINE_enum(
  'distributed',
  'auto',
  ['auto', 'on', 'off'],
  'Start jax.distributed: auto = when a coordinator address is given or a TPU VM, '
  'SLURM job of several tasks or Open MPI launch is detected.',
)
flags.DEFINE_string(
  'coordinator_address',
  '',
  'host:port of process 0 (GPU clusters without SLURM/MPI; or JAX_COORDINATOR_ADDRESS).',
)
flags.DEFINE_integer('num_processes', 0, 'Number of processes (with --coordinator_address).')
flags.DEFINE_integer('process_id', -1, "This process's index (with --coordinator_address).")
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  setup_runtime()
  from ldm_jax.runtime import starting

  starting('starting JAX and the devices')
  from ldm_jax.parallel import distributed  # before any JAX computation

  distributed.initialize(
    FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
  )
  import jax

  from ldm_jax.runtime import log_backend

  log_backend()
  if jax.process_index() != 0:  # process 0 writes the logs; the others only warnings
    logging.getLogger().setLevel(logging.WARNING)
  starting('importing the training code')
  from ldm_jax.train.loop import train  # after the runtime setup (compilation cache, logging)

  train(FLAGS.config, FLAGS.workdir, exit_on_hang=True)


def run() -> None:
  """The console script (``pyproject``/setup.cfg entry point) and ``python -m``."""
  from ldm_jax.runtime import run_cli

  run_cli(main)


if __name__ == '__main__':
  run()
