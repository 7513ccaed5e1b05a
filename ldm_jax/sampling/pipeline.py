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
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import storage
from ldm_jax.config import downsampling_factor, load_config_file, validate
from ldm_jax.errors import UserError
from ldm_jax.images import to_model_range, to_uint8
from ldm_jax.latent_diffusion import (
  LatentDiffusion,
  build_first_stage,
  init_first_stage,
  latent_shape,
)
from ldm_jax.parallel import sharding
from ldm_jax.sampling.generate import make_generate_fn
from ldm_jax.sampling.options import SamplingOptions
from ldm_jax.tasks import TASK_ARGS, TaskInputError, check_divisible
from ldm_jax.tasks.base import read_model_image

__all__ = ['Pipeline', 'TASK_ARGS', 'load_workdir', 'load_config_file']


class _Plan(NamedTuple):
  """What every batch of one iter_samples call shares."""

  options: SamplingOptions
  generate: Callable
  cond: Any
  uncond: Any
  post: Callable | None
  shape: tuple  # the latents of all samples: (num, h, w, c)
  batch: int
  z_init: Any  # image-to-image: the init latents, sharded
  latents: Any  # the caller's starting noise, or None


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
  # The callback of the sampling running now: the compiled loop calls _trampoline, which calls
  # it, so a new callback (a new lambda in a notebook) needs no new compile.
  _callback: Any = dataclasses.field(default=None, repr=False)
  lora: Any = None  # the LoRA files merged into params (ldm_jax.load(..., lora=...)): a report

  def _trampoline(self, t, x, eps) -> None:
    if self._callback is not None:
      self._callback(t, x, eps)

  # -- first stage -------------------------------------------------------------------------
  @property
  def downsampling(self) -> int:
    return downsampling_factor(self.config)

  @property
  def first_stage(self):
    return (
      self.ldm.first_stage if self.ldm is not None else build_first_stage(self.config.first_stage)
    )

  def encode(self, images, key=None) -> jax.Array:
    """Images (uint8 [B, H, W, 3], or float in [-1, 1]) -> latents times scale_factor: the KL
    posterior mode (a sample if ``key``), VQ pre-quantisation latents (as the LDM trains on)."""
    x = jnp.asarray(images)
    x = to_model_range(x) if x.dtype == jnp.uint8 else x.astype(jnp.float32)
    check_divisible(x.shape[1], x.shape[2], self.downsampling, 'the image')
    fn = self._fns.get('encode')
    if fn is None:
      fn = self._fns['encode'] = jax.jit(self._autoencoder.latents)
    return fn(self.first_stage_params, x, self.scale_factor, key)

  def decode(self, latents) -> jax.Array:
    """Latents (times scale_factor) -> images in [-1, 1] (VQ: quantised first)."""
    fn = self._fns.get('decode')
    if fn is None:
      fn = self._fns['decode'] = jax.jit(self._autoencoder.decode)
    return fn(self.first_stage_params, jnp.asarray(latents, jnp.float32), self.scale_factor)

  @property
  def _autoencoder(self) -> LatentDiffusion:
    """The LDM, or for an autoencoder a LatentDiffusion shell around it (encode/decode only)."""
    if self.ldm is not None:
      return self.ldm
    return LatentDiffusion(self.first_stage, None, None, None, None)

  # -- sampling ----------------------------------------------------------------------------
  def condition(self, num: int, **task_inputs):
    """(raw condition, canvas (H, W) or None, postprocess) for this model's task; a task input
    that the model does not read, or a missing one, is an error naming the right one."""
    task = self.ldm.task
    wanted = task.input_args
    given = {k for k, v in task_inputs.items() if v is not None}
    optional = set(task.optional_args)
    extra, missing = given - set(wanted), set(wanted) - given - optional
    if extra or missing:
      need = ', '.join(f'--{w}' for w in wanted) or 'no condition'
      raise TaskInputError(
        f'this model ({task.name}) takes {need}; '
        + (
          f'got {", ".join("--" + e for e in sorted(extra))}'
          if extra
          else f'missing {", ".join("--" + m for m in sorted(missing))}'
        )
      )
    return task.user_condition(num, **{k: task_inputs.get(k) for k in wanted})

  def sample(self, num: int = 4, options: SamplingOptions | None = None, **kwargs) -> np.ndarray:
    """``num`` images, uint8 [num, H, W, 3] (``return_float=True``: [-1, 1]); the arguments are
    ``iter_samples``'s."""
    return np.concatenate(list(self.iter_samples(num, options, **kwargs)))

  def iter_samples(
    self,
    num: int = 4,
    options: SamplingOptions | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    callback: Callable | None = None,
    return_float: bool = False,
    first: int = 0,
    **inputs,
  ) -> Iterator[np.ndarray]:
    """``num`` images in batches (the last one smaller), uint8 [b, H, W, 3]; ``sample``
    concatenates them, evaluations stream them.

    Args:
      num: how many images.
      options: a ``SamplingOptions``; its fields may also be given one by one as keywords
        (``sampler='dpmpp_2m', steps=20, guidance_scale=5.0, seed=1, batch_size=8, ...``), over
        ``options`` or over config.sampling's.
      height, width: the canvas (default: the training size) for models whose condition has no
        size of its own.
      callback: ``callback(t, x_t, eps)`` on the host at every model call (progress or previews
        in a notebook; see ``sampling.generate.make_generate_fn``). A new callback compiles
        nothing new.
      return_float: images in [-1, 1] instead of uint8.
      return_latents (in inputs): the final latents [b, h, w, c], variance preserving: with
        ``denoising_end`` < 1, the input of a ``denoising_start`` run (SDXL's base -> refiner).
      first: start at this sample (a multiple of ``batch_for(batch_size)``), to continue a stopped
        run: each batch depends only on the seed and its first index.
      **inputs: the model's task input (one; see ``tasks.TASK_ARGS``): ``class_label`` ('all' or
        an int), ``prompt``, ``lr_image``, ``image`` + ``mask``, ``layout``, ``segmentation``
        (paths or arrays); ``init_image`` (a path or an array, any model): image-to-image,
        SDEdit-style, its latent noised to ``strength`` of the sampler's schedule and denoised
        from there, its size setting the canvas; ``latents``: the starting noise
        [num, h, w, c] instead of the seed's (diffusers' ``latents``).
    """
    return_latents = bool(inputs.pop('return_latents', False))
    plan = self._plan(num, options, height, width, callback, inputs, return_latents)
    if first % plan.batch:
      raise ValueError(f'first={first} is not a multiple of the batch ({plan.batch})')
    for start in range(first, num, plan.batch):
      self._callback = callback
      images = self._draw_batch(plan, start, num)
      self._callback = None
      yield images if return_float or return_latents else to_uint8(images)

  # The steps of iter_samples.
  def _plan(self, num: int, options, height, width, callback, inputs: dict, latents_out=False):
    """Everything the batches share: options resolved, condition, canvas, compiled function."""
    if self.ldm is None:
      raise ValueError(
        'this is an autoencoder (config.stage="autoencoder"): it encodes and '
        'decodes; sampling needs an LDM'
      )
    options, task_inputs, init_image, latents = self._split_inputs(options, inputs)
    cond, canvas, post = self.condition(num, **task_inputs)
    init = None if init_image is None else read_model_image(init_image)
    H, W = self._canvas(canvas, height, width, init)
    cond = self.ldm.task.finish_condition(cond, H, W)
    batch = self.batch_for(options.batch_size)
    z_init = None
    if init is not None and options.strength < 1.0:
      z_init = self._shard(np.repeat(np.asarray(self.encode(init[None])), batch, axis=0))
    f = self.downsampling
    shape = (num, H // f, W // f, self.config.first_stage.embed_dim)
    if latents is not None and np.shape(latents) != shape:
      raise TaskInputError(f'latents of shape {np.shape(latents)}; expected {shape}')
    if options.denoising_start > 0 and latents is None:
      raise TaskInputError(
        'denoising_start continues the latents of a denoising_end run: pass them'
      )
    return _Plan(
      options,
      self._generate_fn(options, init is not None, callback, latents_out),
      cond,
      self._unconditional(options, cond, num),
      None if latents_out else post,
      shape,
      batch,
      z_init,
      latents,
    )

  def _draw_batch(self, plan: _Plan, start: int, num: int) -> np.ndarray:
    """Images [min(batch, num - start), H, W, 3] in [-1, 1] of the batch from sample ``start``:
    its noise depends only on the seed and ``start``."""
    idx = np.minimum(np.arange(start, start + plan.batch), num - 1)  # pad the last batch
    take = lambda tree: None if tree is None else jax.tree.map(lambda a: np.asarray(a)[idx], tree)
    key = jax.random.fold_in(jax.random.PRNGKey(plan.options.seed), start)
    k_noise, k_sample = jax.random.split(key)
    x_T = jax.random.normal(k_noise, (plan.batch,) + plan.shape[1:], jnp.float32)
    if plan.latents is not None:
      x_T = jnp.asarray(np.asarray(plan.latents, np.float32)[idx])
    images = plan.generate(
      self.params,
      self.first_stage_params,
      self.scale_factor,
      self._shard(x_T),
      self._shard(take(plan.cond)),
      self._shard(take(plan.uncond)),
      k_sample,
      plan.z_init,
    )
    images = np.asarray(jax.device_get(images))[: min(plan.batch, num - start)]
    return plan.post(images) if plan.post is not None else images

  def _split_inputs(self, options, inputs: dict):
    """(options resolved over config.sampling, task inputs, init image, latents)."""
    fields = SamplingOptions.fields()
    given = {k: inputs.pop(k) for k in list(inputs) if k in fields}
    init_image, latents = inputs.pop('init_image', None), inputs.pop('latents', None)
    unknown = set(inputs) - set(TASK_ARGS)
    if unknown:
      raise TypeError(
        f'unknown argument(s) {sorted(unknown)}; expected a task input {TASK_ARGS}, '
        f'init_image, latents or a sampling option {fields}'
      )
    if options is not None:
      options = dataclasses.replace(options, **{k: v for k, v in given.items() if v is not None})
    else:
      options = SamplingOptions.resolve(self.config, self.ldm.guidable, **given)
    return options, inputs, init_image, latents

  def _canvas(self, canvas, height, width, init) -> tuple[int, int]:
    """The output size: the condition's, else the init image's, else height/width or the
    training size; a size given twice that disagrees is an error."""
    size = self.config.data.image_size
    if canvas is not None and (height or width) and (height, width) != tuple(canvas):
      raise TaskInputError(
        f'the condition fixes the output size to {canvas[0]}x{canvas[1]};'
        ' leave --height/--width unset'
      )
    H, W = canvas if canvas is not None else (height or size, width or size)
    if init is not None:  # image-to-image: the init image sets the canvas
      if (height or width) and (height, width) != init.shape[:2]:
        raise TaskInputError(
          f'the init image is {init.shape[0]}x{init.shape[1]}; leave --height/--width unset '
          'or resize the image'
        )
      if canvas is not None and tuple(canvas) != init.shape[:2]:
        raise TaskInputError(
          f'the init image is {init.shape[0]}x{init.shape[1]} but the condition fixes '
          f'{canvas[0]}x{canvas[1]}'
        )
      H, W = init.shape[:2]
    check_divisible(H, W, self.downsampling, 'the output size')
    return H, W

  def _unconditional(self, options: SamplingOptions, cond, num: int):
    """Guidance's unconditional input: the negative prompt's condition, or the task's null one."""
    if options.negative_prompt is not None:
      return self.ldm.task.negative_condition(num, options.negative_prompt, cond)
    return self.ldm.task.null_condition(cond) if options.guided else None

  def _generate_fn(self, options: SamplingOptions, img2img: bool, callback, latents_out=False):
    """The compiled sampling function, cached on the options that change it; a callback goes
    through _trampoline, so only whether there is one is part of the key."""
    key = (options.compile_key(img2img), callback is not None, latents_out)
    if key not in self._fns:
      trampoline = self._trampoline if callback is not None else None
      self._fns[key] = make_generate_fn(
        self.ldm, options, img2img=img2img, callback=trampoline, return_latents=latents_out
      )
    return self._fns[key]

  def _shard(self, tree):
    """Arrays with the batch split over the mesh (None stays None)."""
    batch = sharding.batch_sharded(self.mesh)
    return None if tree is None else jax.tree.map(lambda a: jax.device_put(a, batch), tree)

  def batch_for(self, batch_size: int) -> int:
    """The batch that iter_samples draws for ``batch_size``: rounded to the device count."""
    n_dev = self.mesh.devices.size
    return max(n_dev, batch_size - batch_size % n_dev)

  @property
  def num_classes(self) -> int:
    """Real classes (without the null class), 0 for other models."""
    return getattr(self.ldm.task, 'num_classes', 0) if self.ldm is not None else 0


# -- loading -------------------------------------------------------------------------------------
def load_workdir(
  path_or_config, step: int | None = None, use_ema: bool = True, seed: int = 0
) -> Pipeline:
  """A workdir (train.py or ``python -m ldm_jax.convert``), a config file, or a ConfigDict. Configs
  get random weights (seeded): for trying the code offline, tests, or fine-tuning from scratch.
  The public entry is ``ldm_jax.load``, which also takes Hugging Face hub ids and calls this."""
  if isinstance(path_or_config, str) and storage.isdir(path_or_config):
    return _load_workdir(path_or_config, step, use_ema)
  if isinstance(path_or_config, str):
    if not path_or_config.partition(':')[0].endswith('.py'):  # configs/x.py or configs/x.py:arg
      raise UserError(f'{path_or_config!r} is neither a workdir nor a config file (.py)')
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
  params = (
    state['ema_params'] if use_ema and state.get('ema_params') is not None else state['params']
  )
  if saved['stage'] != 'ldm':  # an autoencoder: its (EMA) weights are the first stage
    return Pipeline(config, step, None, None, _device_tree(mesh, params), jnp.float32(1.0), mesh)
  if config.get('lora') and config.lora.rank > 0:  # adapters: merged into their base
    params, first_stage = merge_lora_run(config, params)
  return Pipeline(
    config,
    step,
    LatentDiffusion.from_config(config),
    _device_tree(mesh, params),
    _device_tree(mesh, first_stage),
    _device_tree(mesh, np.float32(state['scale_factor'])),
    mesh,
  )


def merge_lora_run(config, adapters) -> tuple[dict, dict]:
  """(the base model's parameters with a LoRA run's ``adapters`` merged in, its first stage): the
  base is the run's training.init_from."""
  from ldm_jax.nn import lora as lora_lib

  base = config.training.init_from
  _, _, state, first_stage = ckpt_lib.load_raw(base)
  scaling = lora_lib.scaling(config)
  merged = jax.jit(lambda b, a: lora_lib.merge(b, a, scaling))(state['params'], adapters)
  return jax.device_get(merged), first_stage


def _random_pipeline(config, seed: int) -> Pipeline:
  validate(config)
  mesh = sharding.make_mesh()
  k_fs, k_ldm = jax.random.split(jax.random.PRNGKey(seed))
  first_stage = _device_tree(mesh, jax.jit(lambda k: init_first_stage(config, k))(k_fs))
  if config.stage != 'ldm':
    return Pipeline(config, 0, None, None, first_stage, jnp.float32(1.0), mesh)
  ldm = LatentDiffusion.from_config(config)
  params = jax.jit(lambda k: ldm.init_params(k, latent_shape(config)))(k_ldm)
  return Pipeline(
    config,
    0,
    ldm,
    _device_tree(mesh, params),
    first_stage,
    _device_tree(mesh, np.float32(config.diffusion.scale_factor)),
    mesh,
  )
