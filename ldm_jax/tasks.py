"""The conditions of each task, from what a user has (labels, prompts, image files, box lists) to
the raw condition the model's kind reads (``LatentDiffusion`` docstring), prepared as the
reference's scripts and data modules do. Each returns arrays with a leading batch axis of ``num``.

  class          class_condition(config, 'all' | int, num)            -> int32 [num]
  text           text_condition(config, prompt, num)                  -> int32 [num, 77]
  layout         layout_condition(config, boxes.json, num)            -> int32 [num, 92]
  super-res.     image_condition(lr_image, num)                       -> [num, h, w, 3] in [-1, 1]
  inpainting     inpainting_condition(image, mask, num)               -> {'masked_image', 'mask'}
  semantic       segmentation_condition(config, label map, num)       -> one-hot [num, H, W, classes]

``null_condition`` gives the "unconditional" input for classifier-free guidance.
"""
from __future__ import annotations

import functools

import numpy as np

from ldm_jax import layout as layout_lib
from ldm_jax.config import conditioning_key, num_real_classes


class TaskInputError(ValueError):
  """A task input (file, prompt, label) that the model cannot use; the message says why."""


# -- images --------------------------------------------------------------------------------------
def read_image(image, mode: str = 'RGB') -> np.ndarray:
  """A path or an array -> uint8 [H, W, C] (C = 3 for RGB, 1 for L). Arrays may be uint8 or float
  in [0, 1]."""
  if isinstance(image, str):
    from PIL import Image
    try:
      with Image.open(image) as im:
        arr = np.asarray(im.convert(mode))
    except (OSError, ValueError) as e:
      raise TaskInputError(f'cannot read image {image!r}: {e}') from None
  else:
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
      arr = np.clip(np.round(arr.astype(np.float32) * 255), 0, 255).astype(np.uint8)
  if arr.ndim == 2:
    arr = arr[..., None]
  want = 3 if mode == 'RGB' else 1
  if arr.shape[-1] != want:
    if want == 1 and arr.shape[-1] in (3, 4):
      arr = np.round(arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(
          np.uint8)[..., None]  # PIL's L conversion
    elif want == 3 and arr.shape[-1] == 1:
      arr = np.repeat(arr, 3, axis=-1)
    else:
      raise TaskInputError(f'expected an image with {want} channel(s), got shape {arr.shape}')
  return arr


def to_model_range(image_uint8: np.ndarray) -> np.ndarray:
  return image_uint8.astype(np.float32) / 127.5 - 1.0


def _repeat(x: np.ndarray, num: int) -> np.ndarray:
  return np.broadcast_to(x[None], (num,) + x.shape).copy()


def check_divisible(height: int, width: int, factor: int, what: str) -> None:
  if height % factor or width % factor:
    raise TaskInputError(f'{what} is {height}x{width}; both sides must be multiples of the first '
                         f'stage\'s downsampling factor {factor} (crop or resize it)')


# -- per task ------------------------------------------------------------------------------------
def class_condition(config, class_label, num: int) -> np.ndarray:
  """'all' (or None) cycles the real classes; an integer repeats one class."""
  real = num_real_classes(config)
  if class_label in (None, '', 'all'):
    return np.arange(num, dtype=np.int32) % real
  try:
    label = int(class_label)
  except (TypeError, ValueError):
    raise TaskInputError(f"a class label must be an integer or 'all', got {class_label!r}") from None
  if not 0 <= label < real:
    raise TaskInputError(f'class label {label} is outside this model\'s classes 0..{real - 1}')
  return np.full(num, label, np.int32)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
  from ldm_jax.tokenizer import load_bert_tokenizer
  return load_bert_tokenizer(path)


def text_condition(config, prompt, num: int) -> np.ndarray:
  """A prompt (or a list of num prompts) -> BERT token ids [num, max_seq_len], as BERTEmbedder's
  tokenizer does (truncated and padded to max_seq_len, no attention mask)."""
  from ldm_jax.tokenizer import tokenize
  cs = config.cond_stage
  prompts = [prompt] * num if isinstance(prompt, str) else list(prompt)
  if len(prompts) != num:
    raise TaskInputError(f'got {len(prompts)} prompts for {num} samples')
  return tokenize(_tokenizer(cs.tokenizer), prompts, cs.max_seq_len)


def layout_condition(config, layout, num: int) -> np.ndarray:
  """A layout JSON file (see ldm_jax.layout) or a list of objects -> tokens [num, max_seq_len]."""
  cs = config.cond_stage
  try:
    if isinstance(layout, str):
      return layout_lib.load_layouts(layout, num, cs.max_seq_len, cs.vocab_size)
    return _repeat(layout_lib.tokenize_for(layout, cs.max_seq_len, cs.vocab_size), num)
  except (OSError, ValueError) as e:
    raise TaskInputError(str(e)) from None


def image_condition(image, num: int) -> np.ndarray:
  """A low-resolution image (super-resolution) -> [num, h, w, 3] in [-1, 1], as the reference's
  LR_image (it is concatenated to the latent, so the output is f times its size). A batch of
  ``num`` images (an array [num, h, w, 3]) gives each sample its own input."""
  if not isinstance(image, str) and np.ndim(image) == 4:
    if len(image) != num:
      raise TaskInputError(f'got {len(image)} low-resolution images for {num} samples')
    return np.stack([to_model_range(read_image(im)) for im in image])
  return _repeat(to_model_range(read_image(image)), num)


def inpainting_condition(image, mask, num: int) -> tuple[dict, np.ndarray, np.ndarray]:
  """scripts/inpaint.py: the mask (white = fill) is binarised at 0.5, masked_image = (1 - mask) *
  image, both mapped to [-1, 1]. Returns (condition, image in [-1, 1], mask in {0, 1}); the last two
  are for ``composite``."""
  img = read_image(image)
  m = read_image(mask, 'L').astype(np.float32) / 255.0
  if m.shape[:2] != img.shape[:2]:
    raise TaskInputError(f'the mask is {m.shape[1]}x{m.shape[0]} but the image is '
                         f'{img.shape[1]}x{img.shape[0]}; they must be the same size')
  m = (m >= 0.5).astype(np.float32)
  cond = {k: _repeat(v, num) for k, v in masked_input(img, m).items()}
  return cond, to_model_range(img), m


def masked_input(image_uint8: np.ndarray, mask01: np.ndarray) -> dict:
  """The inpainting model's raw condition (any leading batch axes): masked_image = (1 - mask) *
  image and the mask, both in [-1, 1] (mask 1 = to fill), as scripts/inpaint.py."""
  masked = (1.0 - mask01) * (image_uint8.astype(np.float32) / 255.0)
  return {'masked_image': masked * 2 - 1, 'mask': mask01 * 2 - 1}


def composite(samples: np.ndarray, image: np.ndarray, mask01: np.ndarray) -> np.ndarray:
  """Inpainting output as the reference composites it: (1 - mask) image + mask sample, in [-1, 1]."""
  return (1.0 - mask01) * image + mask01 * samples


def segmentation_condition(config, segmentation, num: int) -> np.ndarray:
  """A label map (PNG of class indices, or an integer array [H, W]) -> one-hot float32
  [num, H, W, n_classes], as taming's segmentation datasets feed the SpatialRescaler."""
  n = config.cond_stage.in_channels
  if isinstance(segmentation, str) and segmentation.endswith('.npy'):
    labels = np.load(segmentation)
  elif isinstance(segmentation, str):
    from PIL import Image
    try:
      with Image.open(segmentation) as im:
        if im.mode not in ('L', 'P', 'I', 'I;16'):
          raise TaskInputError(f'{segmentation!r} is a {im.mode} image; a segmentation map is a '
                               'single-channel PNG whose pixel values are class indices')
        labels = np.asarray(im)
    except OSError as e:
      raise TaskInputError(f'cannot read segmentation {segmentation!r}: {e}') from None
  else:
    labels = np.asarray(segmentation)
  if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
    raise TaskInputError(f'a segmentation map is an integer array [H, W], got {labels.dtype} '
                         f'{labels.shape}')
  if labels.min() < 0 or labels.max() >= n:
    raise TaskInputError(f'segmentation classes must be in 0..{n - 1}, found '
                         f'{labels.min()}..{labels.max()}')
  return _repeat(np.eye(n, dtype=np.float32)[labels], num)


def null_condition(config, cond):
  """The unconditional input for classifier-free guidance, shaped like ``cond``: the null class,
  the empty prompt (txt2img.py), the empty layout, zeros for given embeddings (knn2img.py)."""
  cs, num = config.cond_stage, len(cond)
  if conditioning_key(config) != 'crossattn':
    raise TaskInputError('classifier-free guidance needs a model conditioned through cross-'
                         f'attention (class, text, layout, embeddings); this one is {cs.kind!r} '
                         f'({conditioning_key(config) or "unconditional"}): use guidance_scale 1')
  if cs.kind == 'class':
    if cs.null_label < 0:
      raise TaskInputError('classifier-free guidance needs a class-conditional model trained with '
                           'a null class (config.cond_stage.null_label >= 0); use guidance_scale 1')
    return np.full(num, cs.null_label, np.int32)
  if cs.kind == 'bert':
    if cs.use_tokenizer:
      return text_condition(config, '', num)
    return _repeat(layout_lib.empty_layout(cs.max_seq_len, cs.vocab_size), num)
  return np.zeros_like(cond)
