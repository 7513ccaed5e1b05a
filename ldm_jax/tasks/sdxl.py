"""SDXL text-to-image (``cond_stage.kind='sdxl'``): a prompt tokenized once per text encoder, plus
the size and score numbers SDXL is conditioned on (``cond_stage.micro_conditioning``).

Raw condition: ``{'tokens': int32 [B, E, 77], 'micro': float32 [B, k], 'keep_text': float32 [B]}``.
``micro`` holds, in config order, original size (h, w), crop top-left (top, left), target size
(h, w) and/or the aesthetic score; NaN stands for "the output size" and is filled in when the canvas
is known (``finish_condition``), as diffusers defaults ``original_size`` and ``target_size`` to
(height, width). ``keep_text`` 0 zeroes the text's context and pooled embedding: the unconditional
input of models with ``zeros_for_empty_prompt`` (diffusers' ``force_zeros_for_empty_prompt``),
which condition dropout trains as generative-models' ``ucg_rate`` does.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ldm_jax.config import TextEncoderConfig
from ldm_jax.config.choices import MICRO_CONDITIONS
from ldm_jax.nn.sdxl import SDXLTextEncoders, micro_embedding
from ldm_jax.tasks import tokenizer as tokenizer_lib
from ldm_jax.tasks.base import TaskInputError
from ldm_jax.tasks.text import TextToImage

_WIDTH = {'original_size': 2, 'crop_top_left': 2, 'target_size': 2, 'aesthetic_score': 1}
MICRO_ARGS = ('original_size', 'crops_coords_top_left', 'target_size', 'aesthetic_score')


def micro_names(config) -> tuple[str, ...]:
  return tuple(n for n in config.cond_stage.micro_conditioning.split(',') if n)


def vector_width(config) -> int:
  """The UNet's adm_in_channels an SDXL conditioner gives: pooled + micro_dim per number."""
  cs = config.cond_stage
  return cs.projection_dim + cs.micro_dim * sum(_WIDTH[n] for n in micro_names(config))


def _pair(name: str, value) -> list[float]:
  """(a, b), [a, b] or 'a,b' (sample.py's flags) -> [a, b]."""
  parts = value.split(',') if isinstance(value, str) else list(np.ravel(value))
  try:
    out = [float(v) for v in parts]
  except (TypeError, ValueError):
    out = []
  if len(out) != 2:
    raise TaskInputError(f'{name} is a pair (height,width or top,left), got {value!r}')
  return out


class SDXLTextToImage(TextToImage):
  name = 'sdxl'
  caches_text = True  # a caption's entry: context rows, then the pooled embedding (zero-padded)
  encoder_kinds = ('sdxl',)
  input_args = ('prompt',) + MICRO_ARGS
  optional_args = MICRO_ARGS
  input_help = {
    'prompt': 'Text prompt (text-to-image models).',
    'original_size': "SDXL: the 'original' image size H,W it is conditioned on (default: output).",
    'crops_coords_top_left': 'SDXL: the crop top,left it is conditioned on (default: 0,0).',
    'target_size': 'SDXL: the target size H,W it is conditioned on (default: the output size).',
    'aesthetic_score': 'SDXL refiner: the aesthetic score it is conditioned on (default: 6).',
  }

  def validate(self):
    cs, unet = self.cs, self.config.unet
    names = micro_names(self.config)
    bad = [n for n in names if n not in MICRO_CONDITIONS]
    if bad or len(set(names)) != len(names):
      raise ValueError(
        f'config.cond_stage.micro_conditioning={cs.micro_conditioning!r}: a comma-separated '
        f'list of distinct {list(MICRO_CONDITIONS)}'
      )
    if not cs.projection_dim or cs.n_layer <= 0:
      raise ValueError(
        'config.cond_stage.kind=sdxl: the pooled encoder needs n_layer > 0 and projection_dim > 0'
      )
    want = vector_width(self.config)
    if unet.get('adm_in_channels', 0) != want:
      raise ValueError(
        f'config.unet.adm_in_channels={unet.get("adm_in_channels", 0)}, but the SDXL conditioner '
        f'gives {want} (pooled {cs.projection_dim} + {cs.micro_dim} per micro-conditioning '
        f'number): set config.unet.adm_in_channels={want}'
      )

  @property
  def context_width(self) -> int:
    return sum(t.width for t in TextEncoderConfig.sdxl(self.config))

  @property
  def tokenizers(self):
    cs, first = self.cs, self.cs.first_encoder
    main = tokenizer_lib.cached_clip_tokenizer(cs.tokenizer, cs.pad_token_id)
    if not first.embed_dim:
      return (main,)
    return (tokenizer_lib.cached_clip_tokenizer(first.tokenizer, first.pad_token_id), main)

  @property
  def tokenizer(self):  # decoding prompts for grids: any of them
    return self.tokenizers[-1]

  @property
  def pad_id(self) -> int:
    return int(self.cs.pad_token_id)

  def build_encoder(self):
    return SDXLTextEncoders(TextEncoderConfig.sdxl(self.config))

  def encoder_input(self, batch=1):
    encoders = len(TextEncoderConfig.sdxl(self.config))
    return np.zeros((batch, encoders, self.cs.max_seq_len), np.int32)

  def tokenize(self, prompts) -> np.ndarray:
    rows = [tokenizer_lib.tokenize(t, list(prompts), self.cs.max_seq_len) for t in self.tokenizers]
    return np.stack(rows, axis=1)

  def cache_row_shape(self) -> tuple[int, int]:
    return (self.cs.max_seq_len + 1, self.context_width)

  def encode_for_cache(self, ldm, params, tokens):
    """[n, 78, D]: both encoders' context rows, then a row holding the pooled embedding."""
    ctx, pooled = ldm.cond_stage.apply({'params': params['cond_stage']}, tokens)
    pad = jnp.zeros((pooled.shape[0], ctx.shape[-1] - pooled.shape[-1]), pooled.dtype)
    return jnp.concatenate([ctx, jnp.concatenate([pooled, pad], -1)[:, None]], axis=1)

  def null_cached(self, null):
    if self.cs.zeros_for_empty_prompt:  # dropped text is zeros: the cache's null is not read
      return self.null_example()
    return {'cached': null}

  def encode(self, ldm, params, first_stage_params, cond):
    if 'cached' in cond:  # data.text_cache's entries (encode_for_cache)
      cached = cond['cached']
      ctx, pooled = cached[:, :-1], cached[:, -1, : self.cs.projection_dim]
    else:
      ctx, pooled = ldm.cond_stage.apply({'params': params['cond_stage']}, cond['tokens'])
    keep = cond['keep_text'].astype(ctx.dtype)
    micro = micro_embedding(cond['micro'].astype(jnp.float32), self.cs.micro_dim)
    vector = jnp.concatenate([pooled * keep[:, None], micro.astype(pooled.dtype)], axis=-1)
    return {'crossattn': ctx * keep[:, None, None], 'vector': vector}

  # -- conditions ------------------------------------------------------------------------------
  def _micro(self, num, sizes: dict, score: float) -> np.ndarray:
    """[num, k]: the configured numbers; NaN where the output size goes."""
    cols = []
    for n in micro_names(self.config):
      if n == 'aesthetic_score':
        cols.append([score])
      elif sizes.get(n) is None:
        cols.append([0.0, 0.0] if n == 'crop_top_left' else [np.nan, np.nan])
      else:
        cols.append(_pair(n, sizes[n]))
    return np.tile(np.asarray(sum(cols, []), np.float32), (num, 1))

  def user_condition(self, num, prompt=None, original_size=None, crops_coords_top_left=None,
                     target_size=None, aesthetic_score=None):  # fmt: skip
    tokens = self._tokens(num, prompt)
    wanted = set(micro_names(self.config)) | {'prompt'}
    given = dict(original_size=original_size, crop_top_left=crops_coords_top_left,
                 target_size=target_size, aesthetic_score=aesthetic_score)  # fmt: skip
    for name, value in given.items():
      if value is not None and name not in wanted:
        raise TaskInputError(f'this SDXL model is not conditioned on {name}: leave it unset')
    try:
      score = self.cs.aesthetic_score if aesthetic_score is None else float(aesthetic_score)
    except ValueError:
      raise TaskInputError(f'aesthetic_score is a number, got {aesthetic_score!r}') from None
    cond = {
      'tokens': tokens,
      'micro': self._micro(num, given, score),
      'keep_text': np.ones((num,), np.float32),
    }
    return cond, None, None

  def finish_condition(self, cond, height: int, width: int):
    """The output size in place of the NaNs (diffusers' defaults)."""
    micro = np.asarray(cond['micro']).copy()
    cols = np.isnan(micro).any(axis=0)
    micro[:, cols] = np.tile([height, width], int(cols.sum()) // 2)
    return {**cond, 'micro': micro}

  def training_condition(self, examples, positions):
    """The drawn captions' tokens; sizes from data.buckets where the batch has them (else the
    crop is the whole square image: original = target = its size, crop 0, 0)."""
    if 'text_context' in examples[0]:  # data.text_cache: the drawn captions' entries
      pairs = zip(examples, positions)
      text = {'cached': np.stack([e['text_context'][self.caption_index(e, p)] for e, p in pairs])}
    else:
      text = {
        'tokens': self.tokenize([self.caption_for(e, p) for e, p in zip(examples, positions)])
      }
    rows = []
    for e in examples:  # (a latent cache's examples hold no image: the config's square)
      h, w = e['image'].shape[:2] if 'image' in e else (self.config.data.image_size,) * 2
      sizes = dict(original_size=e.get('original_size', (h, w)),
                   crop_top_left=e.get('crop_top_left', (0, 0)), target_size=(h, w))  # fmt: skip
      rows.append(self._micro(1, sizes, self.cs.aesthetic_score)[0])
    keep = np.ones((len(examples),), np.float32)
    return {**text, 'micro': np.stack(rows), 'keep_text': keep}

  def _unconditional_micro(self, micro):
    micro = np.array(micro, np.float32, copy=True)
    names = micro_names(self.config)
    if 'aesthetic_score' in names:
      col = sum(_WIDTH[n] for n in names[: names.index('aesthetic_score')])
      micro[:, col] = self.cs.negative_aesthetic_score
    return micro

  def null_condition(self, cond):
    micro = self._unconditional_micro(cond['micro'])
    if self.cs.zeros_for_empty_prompt:
      return {**cond, 'micro': micro, 'keep_text': np.zeros_like(cond['keep_text'])}
    return {**cond, 'micro': micro, 'tokens': self.tokenize([''] * len(cond['tokens']))}

  def null_example(self):
    if self.cs.zeros_for_empty_prompt:
      return {'keep_text': np.float32(0.0)}
    return {'tokens': self.tokenize([''])[0]}

  def negative_condition(self, num, negative_prompt, cond=None):
    """The negative prompt's tokens with the condition's sizes (diffusers' negative_original_size
    and negative_target_size default to them) and the negative aesthetic score."""
    tokens = self._tokens(num, negative_prompt)
    micro = self._unconditional_micro(cond['micro'])
    return {'tokens': tokens, 'micro': micro, 'keep_text': np.ones((num,), np.float32)}

  def _tokens(self, num, prompt) -> np.ndarray:
    """A prompt (or num of them) -> [num, E, L], as the text task checks and tokenizes them."""
    return TextToImage.user_condition(self, num, prompt)[0]

  def tiles(self, cond, height, width):
    return super().tiles(np.asarray(cond['tokens'])[:, -1], height, width)
