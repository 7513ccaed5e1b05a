"""Sampling images from a latent diffusion model: one jitted function, the step loop inside JAX."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from ldm_jax.diffusion.gaussian import model_output_to_eps
from ldm_jax.diffusion.samplers import guided_eps_fn
from ldm_jax.diffusion.samplers.tiling import tiled_decode, tiled_model_fn
from ldm_jax.errors import UserError
from ldm_jax.images import to_uint8
from ldm_jax.latent_diffusion import LatentDiffusion, latent_shape
from ldm_jax.parallel import sharding
from ldm_jax.sampling.options import SamplingOptions


def make_generate_fn(
  ldm: LatentDiffusion,
  options: SamplingOptions,
  *,
  img2img: bool = False,
  callback: Callable | None = None,
  return_latents: bool = False,
) -> Callable:
  """Returns generate(params, first_stage_params, scale_factor, x_T, cond, uncond, key, z_init=None)
  -> images in [-1, 1], [B, f*h, f*w, 3] for the starting noise x_T [B, h, w, c] (its size sets
  the canvas), sampling as ``options`` say (its seed, batch size and negative prompt are the
  caller's: they are inputs).

  ``img2img`` (with the init image's scaled latents ``z_init``): see ``img2img_start``; the
  hand-off (options.denoising_end / _start): ``_grid_kwargs``; ``return_latents``: not decoded.
  ``cond`` is the task's raw condition (None when unconditional), encoded once, not per step.
  Classifier-free guidance (scale != 1) mixes in ``uncond`` (the task's null condition: the null
  class, the empty prompt), batched as the reference does. ``options.tile`` > 0: latents larger
  than tile x tile are denoised and decoded in overlapping, blended tiles
  (``diffusion.samplers.tiling``; the reference's split_input_params).

  ``callback(t, x_t, eps)``: called on the host at every model evaluation (timestep, the sampler's
  variance-preserving latents, the guided eps), e.g. for previews of x0 = (x_t - sqrt(1 - abar_t)
  eps) / sqrt(abar_t) every k calls in a notebook; not used, it costs nothing."""
  o, record = options, options.record
  ldm = ldm.for_sampling()  # a zero terminal SNR made finite, as diffusers' samplers
  kwargs, (start, n_grid, abar) = _grid_kwargs(ldm, o, img2img)

  def generate(params, first_stage_params, scale_factor, x_T, cond, uncond, key, z_init=None):
    decode = lambda z: ldm.decode(first_stage_params, z, scale_factor)
    if start:
      if z_init is None:
        raise ValueError('image-to-image (strength < 1) needs the init latents z_init')
      if start == n_grid:  # strength 0: nothing to denoise
        return z_init if return_latents else decode(z_init)
      x_T = float(np.sqrt(abar)) * z_init + float(np.sqrt(1 - abar)) * x_T
    c = ldm.conditioning(params, first_stage_params, cond)
    u = ldm.conditioning(params, first_stage_params, uncond) if o.guided else None
    # Guidance rescale acts on the model's own output (v for v models), as diffusers'.
    in_output_space = o.guided and o.guidance_rescale > 0
    model_fn = lambda x, t, cc: (ldm.model_output if in_output_space else ldm.eps)(params, x, t, cc)
    tiled = o.tile > 0 and max(x_T.shape[1:3]) > o.tile
    stride = o.tile_stride or max(1, o.tile // 2)
    if tiled:
      model_fn = tiled_model_fn(model_fn, o.tile, stride)
    eps_fn = guided_eps_fn(model_fn, c, u, o.guidance_scale, o.guidance_rescale)
    if in_output_space:
      guided_out = eps_fn
      eps_fn = lambda x, t: model_output_to_eps(
        ldm.schedule, ldm.parameterization, x, t, guided_out(x, t)
      )
    eps_fn = _with_callback(eps_fn, callback)
    z = record.fn(eps_fn, x_T, key, ldm.schedule, **kwargs)
    if return_latents:
      return z
    if tiled:
      return tiled_decode(decode, z, o.tile, stride, ldm.first_stage.downsample_factor)
    return decode(z)

  return jax.jit(generate)


def _grid_kwargs(ldm: LatentDiffusion, o: SamplingOptions, img2img: bool):
  """(the sampler's keyword arguments: its options, the grid step to start at (image-to-image or
  denoising_start) and to stop at (denoising_end); img2img_start's triple)."""
  kwargs = o.record.kwargs(o.steps, o.eta, o.spacing, o.karras)
  start, n_grid, abar = img2img_start(ldm, o) if img2img else (0, 0, 1.0)
  if start:
    kwargs['start'] = start
  handoff_start, stop = o.grid_range(ldm.schedule)
  if handoff_start and img2img:
    raise UserError('denoising_start continues from latents: give latents, not an init image')
  if handoff_start:
    kwargs['start'] = handoff_start
  if stop is not None:
    kwargs['stop'] = stop
  return kwargs, (start, n_grid, abar)


def img2img_start(ldm: LatentDiffusion, options: SamplingOptions) -> tuple[int, int, float]:
  """Image-to-image: (the grid step where sampling starts, the grid's length, abar of the level
  the init latent is noised to). The last int(strength x grid steps) steps of the sampler's grid
  run, from z_init noised to the level where they start (diffusers' img2img rule; strength 0:
  z_init decoded as it is, 1: pure noise as text-to-image). ``img2img_noise='compvis'``: noised
  one grid step higher, to the level of the step before the first one run, as CompVis
  ``scripts/img2img.py`` (``stochastic_encode`` at ``t_enc``, then DDIM from ``t_enc - 1``);
  the same steps run."""
  o, record = options, options.record
  n_grid = record.grid_length(o.steps, ldm.schedule.num_timesteps)
  start = n_grid - min(int(n_grid * o.strength), n_grid)
  if not start or start == n_grid:
    return start, n_grid, 1.0
  level = start - 1 if o.img2img_noise == 'compvis' else start  # start >= 1 here
  return start, n_grid, record.start_alpha_bar(ldm.schedule, o.steps, level, o.spacing, o.karras)


def _with_callback(eps_fn: Callable, callback: Callable | None) -> Callable:
  """eps_fn that also calls ``callback(t, x, eps)`` on the host (only then: a host transfer per
  model call)."""
  if callback is None:
    return eps_fn

  def with_callback(x, t):
    eps = eps_fn(x, t)
    jax.debug.callback(callback, t[0], x, eps)
    return eps

  return with_callback


def training_options(config, ldm: LatentDiffusion) -> SamplingOptions:
  """config.sampling's options, for samples drawn during training and evaluations."""
  return SamplingOptions.resolve(config, ldm.guidable)


class SampleDrawer:
  """Draws samples with the batch split over ``mesh``, for training grids and evaluations:
  ``drawer(weights, key, n, examples)`` with ``weights`` = (params, first_stage_params,
  scale_factor). ``options``: default config.sampling's (``training_options``). ``generate`` is
  the compiled function (``make_generate_fn``)."""

  def __init__(self, config, mesh, ldm: LatentDiffusion, options: SamplingOptions | None = None):
    self.config, self.mesh, self.ldm = config, mesh, ldm
    self.options = options or training_options(config, ldm)
    self.generate = make_generate_fn(ldm, self.options)

  def __call__(self, weights, key, n: int, examples: dict | None = None, first_class: int = 0):
    """``n`` samples (a multiple of the mesh size): (uint8 numpy [n, H, W, 3] on every process,
    the raw condition). The task picks the conditions: class models cycle through the classes
    (from ``first_class``), other conditional models take those of ``examples``
    (``data.pipeline.condition_examples``: {'cond', 'image'}) and postprocess as they do for
    users (inpainting keeps the known pixels)."""
    task = self.ldm.task
    batch = sharding.batch_sharded(self.mesh)
    k_noise, k_sample = jax.random.split(key)
    x_T = jax.device_put(jax.random.normal(k_noise, (n,) + latent_shape(self.config)), batch)
    cond = task.sample_condition(n, examples, first_class)
    uncond = task.null_condition(cond) if cond is not None and self.options.guided else None
    put = lambda tree: (
      None if tree is None else jax.tree.map(lambda a: jax.device_put(np.asarray(a), batch), tree)
    )
    images = sharding.to_host(self.generate(*weights, x_T, put(cond), put(uncond), k_sample))
    if examples is not None:
      images = task.postprocess_samples(images, examples)
    return to_uint8(np.asarray(images)), cond
