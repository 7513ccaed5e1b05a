"""Parameter counts of a config without allocating weights (jax.eval_shape).

python -m ldm_jax.summary --config=configs/lsun_churches.py
-> {"unet": 294966916, "first_stage": 83653863, "cond_stage": 0, "total": 378620779, ...}
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from ldm_jax.latent_diffusion import abstract_params
from ldm_jax.nn.params import count_params

FLAGS = flags.FLAGS


def param_counts(config) -> dict:
  shapes = abstract_params(config)
  counts = {
    k: count_params(shapes[k]) if shapes[k] is not None else 0
    for k in ('unet', 'first_stage', 'cond_stage')
  }
  counts['total'] = counts['unet'] + counts['first_stage'] + counts['cond_stage']
  counts['first_stage_parts'] = {k: count_params(v) for k, v in shapes['first_stage'].items()}
  return counts


def main(argv):
  del argv
  print(json.dumps(param_counts(FLAGS.config)))


if __name__ == '__main__':  # flags are defined only when run (the module is imported by tests)
  config_flags.DEFINE_config_file('config', None, 'Path to a config file.', lock_config=True)
  flags.mark_flags_as_required(['config'])
  from ldm_jax.runtime import run_cli

  run_cli(main)
