"""The Python API: load a model, sample any task, encode and decode.

  import ldm_jax
  pipe = ldm_jax.load('runs/cin256')                      # a workdir (trained or converted)
  pipe = ldm_jax.load('configs/released/cin256_v2.py')    # a config: random weights, offline
  images = pipe.sample(8, class_label=207, guidance_scale=3.0)     # uint8 [8, 256, 256, 3]
  images = pipe.sample(4, prompt='a castle', guidance_scale=5.0)   # text-to-image
  images = pipe.sample(1, lr_image='lr.png')                       # super-resolution
  images = pipe.sample(1, image='x.png', mask='x_mask.png')        # inpainting
  images = pipe.sample(1, layout='boxes.json')                     # layout-to-image
  images = pipe.sample(1, segmentation='labels.png')               # semantic synthesis
  z = pipe.encode(images); x = pipe.decode(z)                      # first stage

Parameters are plain pytrees (``pipe.params``, ``pipe.first_stage_params``) for fine-tuning or
your own jitted code; ``pipe.ldm`` holds the pure functions (``conditioning``, ``eps``, ``decode``).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import sharding, tasks
from ldm_jax.config import conditioning_key, downsampling_factor, num_real_classes, validate
from ldm_jax.generate import make_generate_fn, to_uint8
from ldm_jax.models import LatentDiffusion, build_first_stage, first_stage_latents, latent_shape

TASK_ARGS = ('class_label', 'prompt', 'lr_image', 'image', 'mask', 'layout', 'segmentation')
# Which keyword gives the condition of each conditioning kind ('first_stage' = inpainting).
_KIND_ARGS = {'none': (), 'class': ('class_label',), 'rescaler': ('segmentation',),
              'first_stage': ('image', 'mask'), 'identity': ('lr_image',)}


def _bert_args(config):
  return ('prompt',) if config.cond_stage.use_tokenizer else ('layout',)


@dataclasses.dataclass
class Pipeline:
  config: ml_collections.ConfigDict
  step: int
  ldm: LatentDiffusion | None  # None for an autoencoder
  params: Any  # {'unet', 'cond_stage'} (LDM) or None
  first_stage_params: Any
  scale_factor: jax.Array
  mesh: Any
  _fns: dict = dataclasses.field(default_factory=dict, repr=False)

  # -- first stage -------------------------------------------------------------------------
  @property
  def downsampling(self) -> int:
    return downsampling_factor(self.config)

  @property
  def first_stage(self):
    return self.ldm.first_stage if self.ldm is not None else build_first_stage(
        self.config.first_stage)

  def encode(self, images, key=None) -> jax.Array:
    """Images (uint8 [B, H, W, 3], or float in [-1, 1]) -> latents times scale_factor: the KL
    posterior mode (a sample if ``key``), VQ pre-quantisation latents (as the LDM trains on)."""
    x = jnp.asarray(images)
    x = x.astype(jnp.float32) / 127.5 - 1.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    tasks.check_divisible(x.shape[1], x.shape[2], self.downsampling, 'the image')
    fn = self._fns.get('encode')
    if fn is None:
      fn = self._fns['encode'] = jax.jit(functools.partial(first_stage_latents, self.first_stage))
    return fn(self.first_stage_params, x, key) * self.scale_factor

  def decode(self, latents) -> jax.Array:
    """Latents (times scale_factor) -> images in [-1, 1] (VQ: quantised first)."""
    fn = self._fns.get('decode')
    if fn is None:
      model = self.first_stage
      fn = self._fns['decode'] = jax.jit(
          lambda p, z: model.apply({'params': p}, z, method='decode'))
    return fn(self.first_stage_params, jnp.asarray(latents, jnp.float32) / self.scale_factor)

  # -- sampling ----------------------------------------------------------------------------
  def condition(self, num: int, **task_inputs):
    """(raw condition, canvas (H, W) or None, postprocess) for this model's task; the task input
    that the model does not read, or a missing one, is an error naming the right one."""
    c = self.config
    kind = c.cond_stage.kind
    wanted = _bert_args(c) if kind == 'bert' else _KIND_ARGS[kind]
    given = {k for k, v in task_inputs.items() if v is not None}
    extra, missing = given - set(wanted), set(wanted) - given - {'class_label'}
    if extra or missing:
      need = ', '.join(f'--{w}' for w in wanted) or 'no condition'
      raise tasks.TaskInputError(
          f'this model ({kind} conditioning) takes {need}; '
          + (f'got {", ".join("--" + e for e in sorted(extra))}' if extra
             else f'missing {", ".join("--" + m for m in sorted(missing))}'))
    get = task_inputs.get
    if kind == 'none':
      return None, None, None
    if kind == 'class':
      return tasks.class_condition(c, get('class_label'), num), None, None
    if kind == 'bert' and c.cond_stage.use_tokenizer:
      return tasks.text_condition(c, get('prompt'), num), None, None
    if kind == 'bert':
      return tasks.layout_condition(c, get('layout'), num), None, None
    if kind == 'rescaler':
      cond = tasks.segmentation_condition(c, get('segmentation'), num)
      return cond, cond.shape[1:3], None
    if kind == 'identity':
      cond = tasks.image_condition(get('lr_image'), num)
      f = self.downsampling
      return cond, (cond.shape[1] * f, cond.shape[2] * f), None
    cond, image, mask = tasks.inpainting_condition(get('image'), get('mask'), num)
    return cond, image.shape[:2], lambda x: tasks.composite(x, image, mask)

  def sample(self, num: int = 4, *, return_float: bool = False, **kwargs) -> np.ndarray:
    """``num`` images, uint8 [num, H, W, 3] (``return_float``: [-1, 1]); the arguments are
    ``iter_samples``'s."""
    return np.concatenate(list(self.iter_samples(num, return_float=return_float, **kwargs)))

  def iter_samples(self, num: int = 4, *, height: int | None = None, width: int | None = None,
                   sampler: str | None = None, steps: int | None = None,
                   eta: float | None = None, guidance_scale: float | None = None, seed: int = 0,
                   batch_size: int = 16, tile: int = 0, tile_stride: int = 0,
                   return_float: bool = False, **task_inputs):
    """``num`` images in batches of ``batch_size`` (the last one smaller), uint8 [b, H, W, 3]
    (``return_float``: [-1, 1]); ``sample`` concatenates them, evaluations stream them. Task inputs (one, by the
    model): class_label ('all' or an int), prompt, lr_image, image + mask, layout, segmentation
    (paths or arrays). height/width (default: the training size) set a larger canvas for models
    whose condition has no size; sampler/steps/eta/guidance_scale default to config.sampling.
    ``tile`` > 0 denoises and decodes latents larger than tile x tile in overlapping tiles (stride
    ``tile_stride``, default tile // 2): large super-resolution inputs, as the reference's
    notebook (tile 128, stride 64 on the latent)."""
    if self.ldm is None:
      raise ValueError('this is an autoencoder (config.stage="autoencoder"): it encodes and '
                       'decodes; sampling needs an LDM')
    unknown = set(task_inputs) - set(TASK_ARGS)
    if unknown:
      raise TypeError(f'unknown task input(s) {sorted(unknown)}; expected one of {TASK_ARGS}')
    s = self.config.sampling
    sampler = sampler or s.sampler
    steps = steps or s.steps
    eta = s.eta if eta is None else eta
    if guidance_scale is None:  # the config's, where the model can be guided
      guidance_scale = s.guidance_scale if conditioning_key(self.config) == 'crossattn' else 1.0
    cond, canvas, post = self.condition(num, **task_inputs)
    size = self.config.data.image_size
    if canvas is not None and (height or width) and (height, width) != tuple(canvas):
      raise tasks.TaskInputError(f'the condition fixes the output size to {canvas[0]}x{canvas[1]};'
                                 ' leave --height/--width unset')
    H, W = canvas if canvas is not None else (height or size, width or size)
    f = self.downsampling
    tasks.check_divisible(H, W, f, 'the output size')
    uncond = tasks.null_condition(self.config, cond) if guidance_scale != 1.0 else None
    key = (sampler, steps, eta, guidance_scale, tile, tile_stride)
    if key not in self._fns:
      self._fns[key] = make_generate_fn(self.ldm, sampler=sampler, steps=steps, eta=eta,
                                        guidance_scale=guidance_scale, tile=tile,
                                        tile_stride=tile_stride)
    generate = self._fns[key]
    n_dev = self.mesh.devices.size
    batch = max(n_dev, batch_size - batch_size % n_dev)
    latent_c = self.config.first_stage.embed_dim
    shard = lambda tree: jax.tree.map(
        lambda a: jax.device_put(a, sharding.batch_sharded(self.mesh)), tree)
    for start in range(0, num, batch):
      idx = np.minimum(np.arange(start, start + batch), num - 1)  # pad the last batch
      take = lambda tree: None if tree is None else jax.tree.map(lambda a: np.asarray(a)[idx], tree)
      k_noise, k_sample = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), start))
      x_T = jax.random.normal(k_noise, (batch, H // f, W // f, latent_c), jnp.float32)
      images = generate(self.params, self.first_stage_params, self.scale_factor,
                        shard(x_T), shard(take(cond)), shard(take(uncond)), k_sample)
      images = np.asarray(jax.device_get(images))[:min(batch, num - start)]
      if post is not None:
        images = post(images)
      yield images if return_float else np.asarray(to_uint8(images))

  @property
  def num_classes(self) -> int:
    """Real classes (without the null class), 0 for other models."""
    return num_real_classes(self.config)


# -- loading -------------------------------------------------------------------------------------
def load_config_file(path: str) -> ml_collections.ConfigDict:
  """configs/<...>.py -> its get_config() (the folder holding configs/ goes on sys.path, as when
  train.py runs from the repository root)."""
  parts = os.path.abspath(path).split(os.sep)
  if 'configs' in parts:
    root = os.sep.join(parts[:len(parts) - 1 - parts[::-1].index('configs')])
    if root not in sys.path:
      sys.path.insert(0, root)
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def load(path_or_config, step: int | None = None, use_ema: bool = True, seed: int = 0) -> Pipeline:
  """A workdir (train.py or ``python -m ldm_jax.convert``), a config file, or a ConfigDict. Configs
  get random weights (seeded): for trying the code offline, tests, or fine-tuning from scratch."""
  if isinstance(path_or_config, str) and os.path.isdir(path_or_config):
    return _load_workdir(path_or_config, step, use_ema)
  if isinstance(path_or_config, str):
    if not path_or_config.endswith('.py'):
      raise FileNotFoundError(f'{path_or_config!r} is neither a workdir nor a config file (.py)')
    config = load_config_file(path_or_config)
  else:
    config = path_or_config
  return _random_pipeline(config, seed)


def _device_tree(mesh, tree):
  return jax.device_put(jax.tree.map(jnp.asarray, tree), sharding.replicated(mesh))


def _load_workdir(workdir, step, use_ema) -> Pipeline:
  saved, step, state, first_stage = ckpt_lib.load_raw(workdir, step)
  config = ml_collections.ConfigDict(saved)
  mesh = sharding.make_mesh()
  params = state['ema_params'] if use_ema and state.get('ema_params') is not None else state['params']
  if saved['stage'] != 'ldm':  # an autoencoder: its (EMA) weights are the first stage
    return Pipeline(config, step, None, None, _device_tree(mesh, params), jnp.float32(1.0), mesh)
  return Pipeline(config, step, LatentDiffusion.from_config(config), _device_tree(mesh, params),
                  _device_tree(mesh, first_stage), _device_tree(mesh, np.float32(state['scale_factor'])),
                  mesh)


def _random_pipeline(config, seed: int) -> Pipeline:
  validate(config)
  mesh = sharding.make_mesh()
  k_fs, k_ldm = jax.random.split(jax.random.PRNGKey(seed))
  fs = build_first_stage(config.first_stage)
  s = config.first_stage.resolution
  init_fs = jax.jit(lambda k: fs.init(k, jnp.zeros((1, s, s, 3)))['params'])
  first_stage = _device_tree(mesh, init_fs(k_fs))
  if config.stage != 'ldm':
    return Pipeline(config, 0, None, None, first_stage, jnp.float32(1.0), mesh)
  ldm = LatentDiffusion.from_config(config)
  params = jax.jit(lambda k: ldm.init_params(k, latent_shape(config)))(k_ldm)
  return Pipeline(config, 0, ldm, _device_tree(mesh, params), first_stage,
                  _device_tree(mesh, np.float32(config.diffusion.scale_factor)), mesh)

