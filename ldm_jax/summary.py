"""Parameter counts of a config without allocating weights (jax.eval_shape).

python -m ldm_jax.summary --config=configs/lsun_churches.py
-> {"unet": 294966916, "first_stage": 83653863, "cond_stage": 0, "total": 378620779, ...}
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from ldm_jax.layers import count_params
from ldm_jax.config import conditioning_key
from ldm_jax.models import (build_cond_stage, build_first_stage, build_unet,
                            cond_stage_example_input, latent_shape)

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file.', lock_config=True)


def param_counts(config) -> dict:
  key = jax.random.PRNGKey(0)
  fs = build_first_stage(config.first_stage)
  s = config.first_stage.resolution
  fs_params = jax.eval_shape(lambda k: fs.init(k, jnp.zeros((1, s, s, 3)))['params'], key)
  counts = {'unet': 0, 'first_stage': count_params(fs_params), 'cond_stage': 0}
  if config.stage == 'ldm':
    cond = build_cond_stage(config)
    context = None
    if cond is not None:
      cond_in = cond_stage_example_input(config)
      cond_params = jax.eval_shape(lambda k: cond.init(k, cond_in), key)
      counts['cond_stage'] = count_params(cond_params)
    cs = config.cond_stage
    if conditioning_key(config) in ('crossattn', 'hybrid'):
      tokens = 1 if cs.kind in ('class', 'identity') else cs.max_seq_len
      context = jnp.zeros((1, tokens, config.unet.context_dim))
    unet = build_unet(config)
    h, w, _ = latent_shape(config)
    x = jnp.zeros((1, h, w, config.unet.in_channels or config.first_stage.embed_dim))
    counts['unet'] = count_params(jax.eval_shape(
        lambda k: unet.init(k, x, jnp.zeros((1,), jnp.int32), context), key))
  counts['total'] = counts['unet'] + counts['first_stage'] + counts['cond_stage']
  counts['first_stage_parts'] = {k: count_params(v) for k, v in fs_params.items()}
  return counts


def main(argv):
  del argv
  print(json.dumps(param_counts(FLAGS.config)))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
