"""python -m ldm_jax.aot: compile a config for a TPU or GPU topology here (see
ldm_jax/aot/__init__.py and ldm_jax/aot/gpu.py)."""

from __future__ import annotations

import json
import os
import sys

from ldm_jax.aot import report, topology_devices
from ldm_jax.aot.search import suggest
from ldm_jax.errors import UserError


def main(argv) -> None:
  from absl import flags

  FLAGS = flags.FLAGS
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  from ldm_jax import optional
  from ldm_jax.aot import gpu
  from ldm_jax.runtime import setup_runtime

  on_gpu = gpu.parse(FLAGS.topology)
  if on_gpu is not None:  # the CPU twin that counts the GPU program's work: as many devices
    os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '')
      + f' --xla_force_host_platform_device_count={on_gpu[1] * on_gpu[2]}'
    )
  elif FLAGS.topology != 'cpu':
    optional.require('libtpu', f'--topology={FLAGS.topology} (compiling for TPUs)')

  setup_runtime()
  import jax
  from ml_collections import config_flags

  jax.config.update('jax_enable_compilation_cache', False)  # TPU programs: not for this host
  devices = topology_devices(FLAGS.topology)
  config = FLAGS.config
  out = report(config, FLAGS.topology, devices, sampling=FLAGS.sampling)
  out['config'] = config_flags.get_config_filename(FLAGS['config'])
  if out['fits'] is False:
    need = out.get('compile_error') or '%.2f GiB needed' % (out['peak_bytes'] / 2**30)
    print(
      f'# does not fit the {out["hbm_bytes"] / 2**30:.0f} GiB HBM of a {out["device_kind"]} '
      f'device: {need}',
      file=sys.stderr,
    )
    if FLAGS.suggest:
      out['suggestion'] = suggest(config, FLAGS.topology, devices)
  print(json.dumps(out))


def run() -> None:
  from absl import flags
  from ml_collections import config_flags

  from ldm_jax.runtime import run_cli

  config_flags.DEFINE_config_file(
    'config', None, 'A config file under configs/.', lock_config=False
  )
  flags.DEFINE_string(
    'topology',
    'v5e:2x4',
    "TPU topology, e.g. 'v5e:4x4', 'v4:2x2x1', 'v5p:2x2x1', or GPUs: 'h100:1x8', 'h200:1x8', "
    "'a100:1x8' (JAX's CUDA plugin, no GPU needed).",
  )
  flags.DEFINE_bool('sampling', True, 'Also compile the sampling loop (LDM configs).')
  flags.DEFINE_bool('suggest', True, 'When it does not fit, search settings that do.')
  flags.mark_flags_as_required(['config'])
  run_cli(main)


if __name__ == '__main__':
  run()
