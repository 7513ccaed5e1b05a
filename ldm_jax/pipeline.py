"""Load a trained LDM workdir for sampling, in scripts or notebooks:

  pipe = ldm_jax.pipeline.load_ldm('runs/digits/ldm')
  gen = ldm_jax.generate.make_generate_fn(pipe.ldm, pipe.latent_shape, guidance_scale=3,
                                          null_label=pipe.config.cond_stage.null_label)
  images = gen(pipe.params, pipe.first_stage_params, pipe.scale_factor, labels, key)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import sharding
from ldm_jax.models import LatentDiffusion, check_pipeline_conditioning, latent_shape


@dataclasses.dataclass
class LoadedLDM:
  config: ml_collections.ConfigDict
  step: int
  ldm: LatentDiffusion
  params: Any
  first_stage_params: Any
  scale_factor: jax.Array
  latent_shape: tuple
  mesh: Any

  @property
  def num_classes(self) -> int:
    """Real classes (without the null class), 0 for unconditional models."""
    cs = self.config.cond_stage
    return 0 if cs.kind != 'class' else cs.n_classes - (1 if cs.null_label >= 0 else 0)

  def shard_batch(self, labels):
    return jax.device_put(np.asarray(labels, np.int32), sharding.batch_sharded(self.mesh))


def load_ldm(workdir: str, step: int | None = None, use_ema: bool = True) -> LoadedLDM:
  saved, step, state, first_stage = ckpt_lib.load_raw(workdir, step)
  if saved['stage'] != 'ldm':
    raise ValueError(f'{workdir} holds a {saved["stage"]} run; sampling needs an LDM run '
                     '(config.stage = "ldm")')
  config = ml_collections.ConfigDict(saved)
  check_pipeline_conditioning(config, 'sampling')
  params = state['ema_params'] if use_ema and state.get('ema_params') is not None else state['params']
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  to_dev = lambda tree: jax.device_put(jax.tree.map(jnp.asarray, tree), repl)
  return LoadedLDM(config, step, LatentDiffusion.from_config(config), to_dev(params),
                   to_dev(first_stage), to_dev(np.float32(state['scale_factor'])),
                   latent_shape(config), mesh)


def sample_labels(config, class_label: str | None, num: int) -> np.ndarray:
  """Labels for ``num`` samples: 'all' cycles the real classes; an integer repeats one class."""
  cs = config.cond_stage
  if cs.kind != 'class':
    if class_label not in (None, ''):
      raise ValueError('--class_label was given, but this model is unconditional')
    return np.zeros(num, np.int32)
  real = cs.n_classes - (1 if cs.null_label >= 0 else 0)
  if class_label in (None, '', 'all'):
    return np.arange(num, dtype=np.int32) % real
  try:
    label = int(class_label)
  except ValueError:
    raise ValueError(f"--class_label must be an integer or 'all', got {class_label!r}") from None
  if not 0 <= label < real:
    raise ValueError(f'--class_label={label} is outside this model\'s classes 0..{real - 1}')
  return np.full(num, label, np.int32)
