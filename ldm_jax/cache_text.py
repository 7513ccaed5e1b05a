"""Encode every caption of a dataset once with the frozen text encoder, into a text cache on disk
or in a bucket:

  python -m ldm_jax.cache_text --config=configs/sd_finetune.py:sd_v1 --out=DIR \
      --config.training.init_from=runs/sd15 --config.data.path=... [--config.k=v ...]

then train with ``--config.data.text_cache=DIR`` (same config; with
``--config.data.latent_cache`` too, the step runs the UNet alone). The encoder is the one of
``training.init_from`` (the weights the fine-tune starts from), computed in the run's
``training.compute_dtype``; every process of a multi-host job encodes its own share of the chunks;
a rerun finishes an interrupted build; training refuses a cache made with another encoder,
tokenizer or data, naming the difference. Format: ldm_jax/data/text_cache.py."""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from ldm_jax.errors import UserError

FLAGS = flags.FLAGS


def encoder_params(config):
  """The frozen text encoder's parameters: those of ``training.init_from``."""
  from ldm_jax import checkpoint as ckpt_lib

  path = config.training.get('init_from', '')
  if not path:
    raise UserError(
      'a text cache encodes with the frozen text encoder the fine-tune starts from: set '
      '--config.training.init_from=WORKDIR (a converted Stable Diffusion, or a trained run)'
    )
  _, _, state, _ = ckpt_lib.load_raw(path)
  if 'cond_stage' not in state['params']:
    raise UserError(f'{path} holds no text encoder (its parameters have no cond_stage)')
  return {'cond_stage': state['params']['cond_stage']}


def build(config, out: str, batch_size: int = 0) -> dict:
  """Builds this process's share of the text cache for ``config``; returns a summary."""
  import time

  import jax
  import numpy as np

  from ldm_jax.config import validate
  from ldm_jax.data import make_source
  from ldm_jax.data.latent_cache import params_fingerprint
  from ldm_jax.data.text_cache import CHUNK, build_text_cache, text_stamp
  from ldm_jax.latent_diffusion import LatentDiffusion

  validate(config)
  ldm = LatentDiffusion.from_config(config, config.training.compute_dtype, False)
  if not ldm.task.caches_text:
    raise UserError(f'a text cache is for text-to-image configs; this one is {ldm.task.name}')
  params = jax.device_put(encoder_params(config))
  tokenizer = getattr(ldm.task, 'tokenizers', ldm.task.tokenizer)
  stamp = text_stamp(config, params_fingerprint(params['cond_stage']), tokenizer)
  fn = jax.jit(lambda p, tokens: ldm.task.encode_for_cache(ldm, p, tokens))
  batch = batch_size or config.training.batch_size

  def encode(texts):
    tokens = ldm.task.tokenize(texts)
    padded = np.zeros((batch, *tokens.shape[1:]), tokens.dtype)  # one compiled shape
    padded[: len(texts)] = tokens
    return np.asarray(jax.device_get(fn(params, padded)), np.float32)[: len(texts)]

  source = make_source(config.data, ldm.task.annotations)
  t0 = time.time()
  process = (jax.process_index(), jax.process_count())
  written = build_text_cache(out, source, encode, batch, stamp, process)
  seconds = time.time() - t0
  examples = sum(min(len(source) - k * CHUNK, CHUNK) for k in written)
  return {
    'out': out,
    'examples': len(source),
    'chunks_written': len(written),
    'examples_encoded': examples,
    'seconds': round(seconds, 2),
  }


def main(argv):
  from ldm_jax.cache_latents import main as cache_main

  cache_main(argv, build)


def run() -> None:
  from ldm_jax.runtime import run_cli

  config_flags.DEFINE_config_file(
    'config', None, 'A text-to-image LDM config file.', lock_config=True
  )
  flags.DEFINE_string('out', None, 'The cache folder (local or gs://).')
  flags.DEFINE_integer('batch_size', 0, 'Captions per encoder call (default: the training batch).')
  flags.mark_flags_as_required(['config', 'out'])
  run_cli(main)


if __name__ == '__main__':
  run()
