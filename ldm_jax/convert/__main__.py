"""python -m ldm_jax.convert compvis|diffusers ...: released checkpoints -> ldm_jax workdirs.

  python -m ldm_jax.convert compvis --name <released name> --out DIR   (downloads, verifies)
  python -m ldm_jax.convert compvis --ckpt model.ckpt --config configs/released/<name>.py --out DIR
  python -m ldm_jax.convert diffusers --path <diffusers folder> --out DIR
  python -m ldm_jax.convert clip --path <transformers CLIP folder> --out DIR   (rdm prompts)

See ldm_jax.convert.compvis, ldm_jax.convert.diffusers and ldm_jax.convert.clip_text.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from ldm_jax.convert.compvis import convert_compvis
from ldm_jax.convert.diffusers import convert_diffusers
from ldm_jax.errors import UserError
from ldm_jax.runtime import log_backend


def _define_flags():
  flags.DEFINE_string('ckpt', None, 'CompVis checkpoint (.ckpt, .pt, .pth or .safetensors).')
  flags.DEFINE_string(
    'path',
    None,
    'diffusers: a pipeline folder (model_index.json) or a model folder (config.json + weights).',
  )
  flags.DEFINE_string(
    'first_stage', None, 'diffusers: the VQModel/AutoencoderKL folder of a UNet folder given alone.'
  )
  flags.DEFINE_string(
    'name',
    None,
    'compvis: a released model (ldm_jax/convert/releases.py): downloaded into $LDM_JAX_CACHE '
    '(~/.cache/ldm_jax), resumed if interrupted, verified, converted with its config.',
  )
  flags.DEFINE_string('mirror', '', 'compvis --name: scheme and host to fetch from instead.')
  flags.DEFINE_string('sha256', '', 'compvis --name: the expected sha256 of the download.')
  flags.DEFINE_string('out', None, 'New workdir to write the converted checkpoint to.')
  flags.DEFINE_bool('ema', True, 'Keep the EMA weights (used for sampling) when the file has them.')
  config_flags.DEFINE_config_file(
    'config', None, 'configs/released/<name>.py of the checkpoint.', lock_config=False
  )


def main(argv):
  FLAGS = flags.FLAGS
  log_backend()
  if len(argv) == 2 and argv[1] == 'diffusers':
    if not FLAGS.path or not FLAGS.out:
      raise UserError('usage: python -m ldm_jax.convert diffusers --path DIR --out DIR')
    print(json.dumps(convert_diffusers(FLAGS.path, FLAGS.out, FLAGS.first_stage), indent=2))
    return
  if len(argv) == 2 and argv[1] == 'clip':
    if not FLAGS.path or not FLAGS.out:
      raise UserError('usage: python -m ldm_jax.convert clip --path DIR --out DIR')
    from ldm_jax.convert.clip_text import convert_clip_text

    print(json.dumps(convert_clip_text(FLAGS.path, FLAGS.out), indent=2))
    return
  if len(argv) != 2 or argv[1] != 'compvis':
    raise UserError(
      'usage: python -m ldm_jax.convert compvis --ckpt FILE --config CONFIG '
      '--out DIR  |  python -m ldm_jax.convert diffusers --path DIR --out DIR'
    )
  source = None
  if FLAGS.name:
    from ldm_jax.config import find_config, load_config_file
    from ldm_jax.convert import releases

    release = releases.get(FLAGS.name)
    if FLAGS.ckpt is None:
      FLAGS.ckpt, digest = releases.fetch(release, FLAGS.mirror, FLAGS.sha256)
      source = {'name': release.name, 'url': releases.mirrored(release.url, FLAGS.mirror)}
      source['sha256'] = digest
    if FLAGS.config is None:
      FLAGS.config = load_config_file(find_config(release.config))
  for name in ('ckpt', 'out', 'config'):
    if getattr(FLAGS, name) is None:
      raise UserError(f'--{name} is required (or --name of a released model)')
  report = convert_compvis(FLAGS.ckpt, FLAGS.config, FLAGS.out, FLAGS.ema)
  if source is not None:
    report['source'] = source
  print(json.dumps(report, indent=2))


def run() -> None:
  """The console script (``ldm-convert``) and ``python -m ldm_jax.convert``."""
  from ldm_jax.runtime import run_cli

  _define_flags()
  run_cli(main)


if __name__ == '__main__':
  run()
