"""python -m ldm_jax.verify --workdir=W --source=PATH: the parity certificate of a converted
checkpoint (see ldm_jax/verify/__init__.py). PATH is what W was converted from: a diffusers folder
or hub id, or a CompVis / Stability .ckpt/.safetensors file. Writes W/verify.json (or --out) and
prints the table; exit status 1 when a component is outside the tolerance."""

from __future__ import annotations

import sys

from absl import flags

from ldm_jax import storage
from ldm_jax.errors import UserError

flags.DEFINE_string('workdir', None, 'The converted workdir (python -m ldm_jax.convert).')
flags.DEFINE_string(
  'source',
  None,
  'What it was converted from: a diffusers folder or hub id, or a .ckpt/.safetensors.',
)
flags.DEFINE_bool('use_ema', True, 'Compare the EMA weights (as converted by default).')
flags.DEFINE_integer('steps', 4, 'DDIM steps of the trajectory.')
flags.DEFINE_float('guidance_scale', 4.0, 'Guidance of the trajectory (text models).')
flags.DEFINE_string('out', None, 'The report (default: WORKDIR/verify.json).')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.workdir or not FLAGS.source:
    raise UserError('give --workdir (the converted model) and --source (what it came from)')
  from ldm_jax.runtime import log_backend, setup_runtime
  from ldm_jax.verify import table, verify, write_report

  setup_runtime()
  log_backend()
  report = verify(
    FLAGS.workdir,
    FLAGS.source,
    use_ema=FLAGS.use_ema,
    steps=FLAGS.steps,
    guidance_scale=FLAGS.guidance_scale,
  )
  write_report(report, FLAGS.out or storage.join(FLAGS.workdir, 'verify.json'))
  print(table(report))
  if not report['passed']:
    sys.exit(1)


def run() -> None:
  from ldm_jax.runtime import run_cli

  run_cli(main)


if __name__ == '__main__':
  run()
