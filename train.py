"""Train either LDM stage: python train.py --config=configs/<name>.py --workdir=DIR [--config.k=v ...]

Resumes by itself from the newest checkpoint in WORKDIR.
"""
from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from ldm_jax.runtime import setup_runtime

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file under configs/.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and images.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  setup_runtime()
  from ldm_jax.trainer import train  # after the runtime setup (compilation cache, logging)
  train(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  from ldm_jax.runtime import run_with_clear_config_errors
  run_with_clear_config_errors(lambda: app.run(main), sys.argv)
