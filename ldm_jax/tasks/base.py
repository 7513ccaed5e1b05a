"""What every task supplies, and the helpers the tasks share.

A task (unconditional, class, text, layout, superres, inpainting, semantic, embeddings) is one
module of this package holding everything about one kind of condition:

  annotations          what each training example carries besides its image and label
  encoder_kinds        the config.cond_stage.kind values that can encode it (the first is usual)
  conditioning_key     how the encoding enters the UNet: '' (none), 'crossattn' or 'concat'
  input_args           the user's keyword arguments of sample.py / Pipeline.sample
  build_encoder()      the conditioning encoder (a linen module) or None
  encoder_input()      a zero input of the encoder (initialisation, shapes)
  encode()             raw condition -> what the UNet consumes (inside jit, once per sample)
  user_condition()     the user's inputs -> (raw condition, canvas size or None, postprocess)
  training_condition() training examples + stream positions -> the batch's raw condition
  null_condition()     the "no condition" input of classifier-free guidance
  negative_condition() the same from a user's negative prompt (text)
  finish_condition()   the raw condition once the output size is known (SDXL's sizes)
  tiles()              pictures of conditions, shown next to samples in grids

The raw condition is what a data batch holds under 'cond' and what a user's inputs become; each
module's docstring gives its shape. Randomness in training conditions (caption choice, box order,
degradation, mask) comes from a generator seeded by (seed, position in the data stream), so a
resumed run sees the same conditions.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError
from ldm_jax.images import pil_to_rgb, to_model_range, unit_to_uint8


class TaskInputError(UserError):
  """A task input (file, prompt, label) that the model cannot use; the message says why."""


class Task:
  name = ''
  annotations: tuple[str, ...] = ()
  encoder_kinds: tuple[str, ...] = ()
  conditioning_key = 'crossattn'
  input_args: tuple[str, ...] = ()
  input_help: dict[str, str] = {}  # each input's help text (sample.py's flags are built from it)
  optional_args: tuple[str, ...] = ()  # inputs with a default (class: cycle the classes)
  # the condition follows each image's pixels or crop, so the latents cannot be cached
  needs_images = False
  # classifier-free guidance applies (by default: the condition is cross-attended alone)
  guidable: bool | None = None
  # training grids and FID during training draw samples for the data's conditions
  samples_from_examples = True
  # What the rest of the code asks of a task (never its name):
  has_condition = True  # False: nothing conditions the UNet (no 'cond', no guidance dropout)
  label_is_condition = False  # a batch's 'label' is the raw condition when it has no 'cond'
  fills_a_mask = False  # inpainting: samples are composited into an image; LPIPS, mask bands
  clip_scored = False  # text-to-image: the evaluation's CLIP score applies
  upsamples = False  # super-resolution: python -m ldm_jax.eval.superres applies
  any_shape = False  # its conditions hold for images of any shape (data.buckets)
  caches_text = False  # a frozen text encoder's outputs can be cached (data.text_cache)

  def __init__(self, config):
    self.config = config
    self.cs = config.cond_stage
    if type(self).conditioning_key:  # a config may ask for another way in ('hybrid')
      self.conditioning_key = self.cs.conditioning_key or type(self).conditioning_key
    if self.guidable is None:
      self.guidable = self.conditioning_key == 'crossattn'

  def validate(self) -> None:
    """The task's own config checks (ValueError naming the key and the fix)."""

  # -- the model -------------------------------------------------------------------------------
  def build_encoder(self):
    """The conditioning encoder with trainable/loadable parameters, or None."""
    return None

  def encoder_input(self, batch: int = 1):
    """A zero input of the encoder's shape and dtype (for init and shape inference)."""
    raise NotImplementedError(f'the {self.name} task has no encoder')

  def encode(self, ldm, params, first_stage_params, cond):
    """The raw condition -> the UNet's conditioning tensor (the reference's
    get_learned_conditioning). Default: the encoder's output, or the condition itself."""
    if ldm.cond_stage is not None:
      return ldm.cond_stage.apply({'params': params['cond_stage']}, cond)
    return cond

  # -- conditions ------------------------------------------------------------------------------
  def user_condition(
    self, num: int, **inputs
  ) -> tuple[Any, tuple[int, int] | None, Callable | None]:
    """(raw condition with a leading axis of ``num``, the canvas (H, W) it fixes or None, a
    postprocess of the images in [-1, 1] or None)."""
    raise NotImplementedError

  def training_condition(self, examples: list[dict], positions: list[int]):
    raise NotImplementedError

  def sample_condition(self, num: int, examples: dict | None, first: int = 0):
    """The raw conditions of ``num`` samples drawn during training: from ``examples``
    (``data.pipeline.condition_examples``) by default."""
    return examples['cond']

  def null_condition(self, cond):
    """The unconditional input for classifier-free guidance, shaped like ``cond``."""
    raise TaskInputError(
      'classifier-free guidance needs a model conditioned through cross-attention (class, '
      f'text, layout, embeddings); this one is {self.cs.kind!r} '
      f'({self.conditioning_key or "unconditional"}): use guidance_scale 1'
    )

  def null_example(self):
    """The null condition of one example (no batch axis), what training's condition dropout
    puts in; a dict holds only the entries that are dropped."""
    return self.null_condition(np.zeros(1))[0]

  def cache_row_shape(self) -> tuple[int, int]:
    """(rows, width) of one caption's entry in data.text_cache (caches_text tasks)."""
    return (self.cs.max_seq_len, self.context_width)

  def encode_for_cache(self, ldm, params, tokens):
    """Token ids -> what data.text_cache stores per caption (``cache_row_shape``)."""
    return self.encode(ldm, params, None, tokens)

  def null_cached(self, null):
    """Condition dropout's null with data.text_cache (``null``: the empty prompt's entry)."""
    return null

  def finish_condition(self, cond, height: int, width: int):
    """The raw condition once the output size is known (SDXL: its size conditioning)."""
    return cond

  @property
  def context_width(self) -> int:
    """The width of the cross-attention context the encoding gives."""
    return self.cs.channels if self.cs.kind == 'identity' else self.cs.embed_dim

  def negative_condition(self, num: int, negative_prompt, cond=None):
    """The unconditional input of guidance from a user's negative prompt (text tasks);
    ``cond``: the condition it goes with."""
    raise TaskInputError(
      f'a negative prompt needs a text-to-image model; this one is {self.name}: leave it unset'
    )

  def postprocess_samples(self, images, examples):
    """Training grids: what the samples of ``examples`` become (inpainting keeps known pixels)."""
    return images

  def tiles(self, cond, height: int, width: int) -> np.ndarray | None:
    """uint8 [N, height, width, 3] pictures of each raw condition, or None."""
    return None

  def rng(self, position: int) -> np.random.Generator:
    return np.random.default_rng([self.config.seed, 2, position])


# -- helpers ---------------------------------------------------------------------------------------
def read_image(image, mode: str = 'RGB') -> np.ndarray:
  """A path or an array -> uint8 [H, W, C] (C = 3 for RGB, 1 for L). Arrays may be uint8 or float
  in [0, 1]."""

  if isinstance(image, str):
    from PIL import Image

    try:
      with storage.open_file(image) as f, Image.open(f) as im:
        arr = pil_to_rgb(im) if mode == 'RGB' else np.asarray(im.convert(mode))
    except (OSError, ValueError) as e:
      raise TaskInputError(f'cannot read image {image!r}: {e}') from None
  else:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
      arr = unit_to_uint8(arr)
  if arr.ndim == 2:
    arr = arr[..., None]
  want = 3 if mode == 'RGB' else 1
  if arr.shape[-1] != want:
    if want == 1 and arr.shape[-1] in (3, 4):
      arr = np.round(arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(
        np.uint8
      )[..., None]  # PIL's L conversion
    elif want == 3 and arr.shape[-1] == 1:
      arr = np.repeat(arr, 3, axis=-1)
    else:
      raise TaskInputError(f'expected an image with {want} channel(s), got shape {arr.shape}')
  return arr


def read_model_image(image) -> np.ndarray:
  """A path or an array -> float32 [H, W, 3] in [-1, 1]."""
  return to_model_range(read_image(image))


def repeat(x: np.ndarray, num: int) -> np.ndarray:
  return np.broadcast_to(x[None], (num,) + x.shape).copy()


def check_divisible(height: int, width: int, factor: int, what: str) -> None:
  if height % factor or width % factor:
    raise TaskInputError(
      f'{what} is {height}x{width}; both sides must be multiples of the first '
      f"stage's downsampling factor {factor} (crop or resize it)"
    )
