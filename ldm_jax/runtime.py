"""Process setup shared by the command-line tools: logging, JAX compilation cache, and turning
config-flag parsing errors into one clear line."""

from __future__ import annotations

import logging
import os
import sys


def setup_runtime() -> None:
  logging.basicConfig(
    level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', force=True
  )
  for noisy in ('absl', 'jax._src', 'orbax', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # gcsfs and google-auth warn on every bucket when no credentials are set up (an emulator).
  for noisy in ('gcsfs', 'google.auth'):
    logging.getLogger(noisy).setLevel(logging.ERROR)
  import jax

  cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/ldm_jax/xla'))
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def run_with_clear_config_errors(run, argv) -> None:
  """absl reports a bad ``--config.key=value`` as a long traceback; say which key and why."""
  try:
    run()
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    from absl.flags import IllegalFlagValueError, UnrecognizedFlagError

    if isinstance(
      e, (IllegalFlagValueError, UnrecognizedFlagError, KeyError, AttributeError)
    ) and any(a.startswith('--config.') for a in argv):
      print(
        f'error: bad config override: {e}\n'
        'Overrides must name an existing key of the config file, e.g. '
        '--config.training.batch_size=64 (see the config file for its keys).',
        file=sys.stderr,
      )
      sys.exit(2)
    raise
