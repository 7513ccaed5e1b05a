"""Does a LoRA run move the samples toward its training data? (issue 36; BENCHMARKS.md "LoRA moves
the samples toward the data")

The base is the tiny SD 2-shaped model of ``configs/sd_finetune.py:tiny`` with random weights
(``nn.params.random_params``, written as a converted workdir: no download); ``configs/lora.py:tiny``
trains rank-2 adapters of its attention (the base frozen) on the digits' captions. The same prompts
and seeds are sampled from the base and from the LoRA run, and compared with the training data
where the LDM models it, in the frozen first stage's latent space (``Pipeline.encode`` of the 1,500
training images): each sample's distance to its nearest training latent (RMS over its elements),
the distance between the samples' mean latent and the data's, and their per-element std.

  python benchmarks/lora_shift.py --dir=/tmp/lora_shift --steps=300

Prints one JSON line per model (base, lora).
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string('dir', '/tmp/lora_shift', 'Where the base and the LoRA run go.')
flags.DEFINE_integer('steps', 300, 'LoRA training steps (batch 8).')
flags.DEFINE_integer('samples', 40, 'Samples per model (the digits 0-9 prompts in turn).')
flags.DEFINE_float('learning_rate', 1e-3, 'The adapters learning rate.')
FLAGS = flags.FLAGS


def write_base(path: str) -> None:
  """configs/sd_finetune.py:tiny with random weights, as a converted workdir."""
  from ldm_jax.configs import sd_finetune
  from ldm_jax.convert.compvis import write_workdir
  from ldm_jax.latent_diffusion import abstract_params
  from ldm_jax.nn.params import random_params

  config = sd_finetune.get_config('tiny')
  params = random_params(abstract_params(config), seed=0)
  first_stage = params.pop('first_stage')
  converted = dict(params=params, ema_params=None, first_stage=first_stage,
                   scale_factor=config.diffusion.scale_factor)  # fmt: skip
  write_workdir(path, config, converted)


def measure(pipe, prompts, data) -> dict:
  import numpy as np

  latents = np.concatenate(
    list(pipe.iter_samples(len(prompts), prompt=prompts, seed=0, return_latents=True))
  ).reshape(len(prompts), -1)
  d2 = ((latents[:, None, :] - data[None]) ** 2).mean(-1)
  return {
    'nearest_rms': float(np.sqrt(d2.min(1)).mean()),
    'mean_latent_rms': float(np.sqrt(((latents.mean(0) - data.mean(0)) ** 2).mean())),
    'std': float(latents.std()),
  }


def main(_):
  import numpy as np

  import ldm_jax
  from ldm_jax.configs import lora
  from ldm_jax.data.sources import DigitsSource
  from ldm_jax.train.loop import train

  base, run = os.path.join(FLAGS.dir, 'base'), os.path.join(FLAGS.dir, f'lora_{FLAGS.steps}')
  if not os.path.isdir(base):
    write_base(base)
  c = lora.get_config('tiny')
  c.optimizer.base_learning_rate = FLAGS.learning_rate
  c.training.update(dict(init_from=base, num_steps=FLAGS.steps, checkpoint_every=FLAGS.steps,
                         log_every=50, sample_every=0))  # fmt: skip
  t0 = time.time()
  train(c, run)
  seconds = time.time() - t0
  source = DigitsSource(16, 'all')
  examples = [source.load(i) for i in range(len(source))]
  words = 'zero one two three four five six seven eight nine'.split()
  prompts = [f'a handwritten digit {words[i % 10]}' for i in range(FLAGS.samples)]
  pipe = ldm_jax.load(base)
  data = np.asarray(pipe.encode(np.stack([e['image'] for e in examples]))).reshape(
    len(examples), -1
  )
  for name, path in (('base', base), ('lora', run)):
    row = {'model': name, 'steps': 0 if name == 'base' else FLAGS.steps}
    row.update(measure(ldm_jax.load(path), prompts, data))
    row.update(data_std=float(data.std()), train_seconds=round(seconds, 1) if name == 'lora' else 0)
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  app.run(main)
