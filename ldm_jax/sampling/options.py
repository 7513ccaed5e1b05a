"""How to sample, as one frozen record: the command-line flags, the pipeline, the evaluations and
the training grids all resolve their options here, once, against ``config.sampling``.

  opts = SamplingOptions.resolve(config, guidable=True, sampler='dpmpp_2m', steps=20)
  opts.compile_key(img2img=False)   # what a compiled sampling function depends on
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ldm_jax.config import CHOICES
from ldm_jax.diffusion.samplers import SAMPLERS, get_sampler
from ldm_jax.errors import UserError

# Image-to-image: the level the init latent is noised to (see generate.make_generate_fn).
IMG2IMG_NOISE = ('diffusers', 'compvis')
SPACINGS = tuple(c for c in CHOICES['sampling.spacing'] if c)  # '' (unset) means 'linspace'


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
  """Every option of a sampling call.

  Args:
    sampler: a name of ``diffusion.samplers.SAMPLERS`` (the reference's ddim, plms, ddpm, or a
      fast solver: dpmpp_2m, unipc, euler, ...).
    steps: sampling steps (ddim/plms: the reference's grid may realise more).
    eta: DDIM's eta (0 = deterministic).
    guidance_scale: classifier-free guidance scale (1 = none).
    guidance_rescale: phi of Lin et al.'s guidance rescale (0 = off; they use 0.7), with guidance.
    spacing: the fast solvers' timestep spacing ('' = 'linspace', 'leading', 'trailing').
    karras: the fast solvers on Karras et al.'s noise levels (rho 7).
    tile: > 0: latents larger than tile x tile are denoised and decoded in overlapping tiles.
    tile_stride: the tiles' stride (0 = tile // 2).
    strength: image-to-image: the share of the sampler's grid that runs (0: the init image as it
      is, 1: pure noise).
    img2img_noise: 'diffusers' (the init latent noised to the level of the first step run) or
      'compvis' (one grid step higher, as CompVis scripts/img2img.py).
    denoising_end: < 1: stop where this share of the training schedule is denoised (the grid steps
      at timesteps >= round(T (1 - denoising_end)) run), e.g. SDXL's base before the refiner
      (diffusers' denoising_end); ``return_latents`` gives the latents at that level.
    denoising_start: > 0: the given ``latents`` are at this share of the schedule (a run stopped by
      denoising_end) and the rest of the grid runs from them, no noise added (diffusers'
      denoising_start, the refiner's side of the hand-off).
    negative_prompt: text models with guidance: the unconditional input instead of the empty
      prompt.
    seed: the random seed; each batch depends only on it and its first index.
    batch_size: images per sampling call (rounded to the device count).
  """

  sampler: str = 'ddim'
  steps: int = 50
  eta: float = 0.0
  guidance_scale: float = 1.0
  guidance_rescale: float = 0.0
  spacing: str = ''
  karras: bool = False
  tile: int = 0
  tile_stride: int = 0
  strength: float = 0.8
  img2img_noise: str = 'diffusers'
  denoising_end: float = 1.0
  denoising_start: float = 0.0
  negative_prompt: Any = None
  seed: int = 0
  batch_size: int = 16

  # The options that config.sampling sets (the rest have the defaults above).
  CONFIGURED = (
    'sampler',
    'steps',
    'eta',
    'guidance_scale',
    'spacing',
    'karras',
    'guidance_rescale',
  )

  def __post_init__(self):
    sampler = get_sampler(self.sampler)
    sampler.kwargs(self.steps, self.eta, self.spacing, self.karras)  # refuses what it does not take
    if self.spacing and self.spacing not in SPACINGS:
      raise UserError(f'spacing must be one of {SPACINGS} (or unset), got {self.spacing!r}')
    if self.steps < 1:
      raise UserError(f'steps={self.steps}: must be at least 1')
    if self.img2img_noise not in IMG2IMG_NOISE:
      raise UserError(f'img2img_noise must be one of {IMG2IMG_NOISE}, got {self.img2img_noise!r}')
    if not 0.0 <= self.strength <= 1.0:
      raise UserError(
        f'strength must be in [0, 1] (the share of the steps run), got {self.strength}'
      )
    if not 0.0 <= self.denoising_start < self.denoising_end <= 1.0:
      raise UserError(
        f'denoising_start={self.denoising_start}, denoising_end={self.denoising_end}: '
        'need 0 <= denoising_start < denoising_end <= 1 (shares of the schedule denoised)'
      )
    if self.negative_prompt is not None and self.guidance_scale == 1.0:
      raise UserError(
        'a negative prompt acts through classifier-free guidance: set guidance_scale > 1'
      )
    if not 0.0 <= self.guidance_rescale <= 1.0:
      raise UserError(f'guidance_rescale must be in [0, 1] (0 = off), got {self.guidance_rescale}')
    if self.tile < 0 or self.tile_stride < 0:
      raise UserError(f'tile={self.tile}, tile_stride={self.tile_stride}: must be >= 0')

  @classmethod
  def fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))

  @classmethod
  def resolve(cls, config, guidable: bool = True, **given) -> SamplingOptions:
    """The options ``given`` (None = not given) over ``config.sampling``'s. Guidance: a scale
    asked for is used as asked (the task refuses guidance it cannot give); none asked means
    config.sampling's where the model can be guided (``guidable``: its condition enters through
    cross-attention alone, as the reference's logging), else 1."""
    unknown = set(given) - set(cls.fields())
    if unknown:
      raise TypeError(f'unknown sampling option(s) {sorted(unknown)}; expected {cls.fields()}')
    s = config.sampling
    values = {k: s.get(k) for k in cls.CONFIGURED if s.get(k) is not None}
    if not guidable:
      values['guidance_scale'] = 1.0
    values.update({k: v for k, v in given.items() if v is not None})
    sampler = SAMPLERS.get(values.get('sampler', cls.sampler))
    ztsnr = config.diffusion.get('rescale_zero_terminal_snr', False)
    if ztsnr and not values.get('spacing') and sampler is not None and sampler.solver_options:
      values['spacing'] = 'trailing'  # Lin et al.: sampling starts from the last timestep
    return cls(**values)

  @property
  def record(self):
    """The sampler's record (``diffusion.samplers.Sampler``)."""
    return SAMPLERS[self.sampler]

  @property
  def guided(self) -> bool:
    return self.guidance_scale != 1.0

  def compile_key(self, img2img: bool) -> SamplingOptions:
    """These options with those that do not change a compiled sampling function (seed, batch
    size, the negative prompt, which is an input; strength without an init image) reset."""
    return dataclasses.replace(
      self,
      seed=0,
      batch_size=0,
      negative_prompt=None,
      strength=self.strength if img2img else 1.0,
      img2img_noise=self.img2img_noise if img2img else 'diffusers',
    )

  def settings(self) -> dict:
    """The options that decide the images, for a run's settings file or report."""
    out = {k: getattr(self, k) for k in self.CONFIGURED + ('seed',) if k != 'guidance_rescale'}
    if self.guidance_rescale:
      out['guidance_rescale'] = self.guidance_rescale
    if self.tile:
      out.update(tile=self.tile, tile_stride=self.tile_stride)
    if self.negative_prompt is not None:
      out['negative_prompt'] = str(self.negative_prompt)
    if (self.denoising_start, self.denoising_end) != (0.0, 1.0):
      out.update(denoising_start=self.denoising_start, denoising_end=self.denoising_end)
    return out

  def grid_range(self, schedule) -> tuple[int, int | None]:
    """(start, stop) grid steps of denoising_start / denoising_end (stop None: to the end)."""
    record, T = self.record, schedule.num_timesteps
    n = record.grid_length(self.steps, T)
    count = lambda share: record.steps_above(
      round(T * (1 - share)), schedule, self.steps, self.spacing, self.karras
    )
    start = count(self.denoising_start) if self.denoising_start > 0 else 0
    stop = count(self.denoising_end) if self.denoising_end < 1 else None
    if stop is not None and stop >= n:
      stop = None
    if (stop if stop is not None else n) <= start:
      raise UserError(
        f'denoising_start={self.denoising_start} and denoising_end={self.denoising_end} leave no '
        f'step of the {n}-step grid to run: more steps, or shares further apart'
      )
    return start, stop
