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


def visible_accelerators() -> list[str]:
  """Device files of accelerators this machine has, whatever JAX was installed with: NVIDIA GPUs
  (/dev/nvidia0...), Cloud TPU chips (/dev/accel*, or /dev/vfio/* on v5p and later)."""
  import glob

  found = sorted(glob.glob('/dev/nvidia[0-9]*')) + sorted(glob.glob('/dev/accel[0-9]*'))
  return found + [p for p in sorted(glob.glob('/dev/vfio/[0-9]*'))]


def log_backend() -> None:
  """Log the backend, device kind and count (after jax.distributed started, if it does); warn when
  JAX runs on the CPU while an accelerator is visible: a CPU-only jaxlib on a GPU or TPU host."""
  import jax

  devices = jax.devices()
  logging.getLogger('ldm_jax').info(
    'JAX %s: backend %s, %d x %s (%d local), %d process(es)',
    jax.__version__,
    jax.default_backend(),
    len(devices),
    devices[0].device_kind,
    jax.local_device_count(),
    jax.process_count(),
  )
  accelerators = visible_accelerators()
  if jax.default_backend() == 'cpu' and accelerators:
    extra = 'tpu' if any('accel' in a or 'vfio' in a for a in accelerators) else 'cuda12'
    logging.getLogger('ldm_jax').warning(
      'running on the CPU, but this machine has %s: JAX was installed without its accelerator '
      "support. Install it with pip install -e '.[%s]' (README, Install), or set "
      'JAX_PLATFORMS=cpu to run on the CPU on purpose.',
      ', '.join(accelerators[:4]),
      extra,
    )


def resolve_config_argv(argv: list[str]) -> list[str]:
  """``--config=configs/x.py`` found among the installed configs when there is no such file here
  (config.find_config), and the folder holding that configs/ put on sys.path, as configs import
  each other as ``configs.<...>`` (the repository root, when run from a checkout)."""
  from ldm_jax.config import find_config

  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith('--config='):
      out[i] = '--config=' + find_config(a[len('--config=') :])
    elif a == '--config' and i + 1 < len(out):
      out[i + 1] = find_config(out[i + 1])
    else:
      continue
    path = os.path.abspath((out[i + 1] if a == '--config' else out[i][9:]).partition(':')[0])
    parts = path.split(os.sep)
    if 'configs' in parts:
      root = os.sep.join(parts[: len(parts) - 1 - parts[::-1].index('configs')])
      if root not in sys.path:
        sys.path.insert(0, root)
  return out


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
