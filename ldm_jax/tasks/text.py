"""Text-to-image: a caption -> token ids [B, 77] (``tasks.tokenizer``) -> a text transformer, whose
hidden states are the UNet's cross-attention context. The CompVis text LDMs (LAION txt2img, COCO
text2img) use BERT WordPiece tokens and the BERTEmbedder (``cond_stage.kind='bert'``), Stable
Diffusion CLIP's BPE and CLIP's text model (``'clip'``, SD 1.x) or OpenCLIP's (``'openclip'``,
SD 2.x). The empty prompt is the unconditional input (txt2img.py). Training picks one of an image's
captions at random."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ldm_jax.config import TextEncoderConfig
from ldm_jax.nn.clip import FrozenCLIPEmbedder, FrozenOpenCLIPEmbedder
from ldm_jax.nn.encoders import BERTEmbedder
from ldm_jax.tasks import tokenizer as tokenizer_lib
from ldm_jax.tasks.base import Task, TaskInputError


class TextToImage(Task):
  name = 'text'
  any_shape = True
  clip_scored = True
  caches_text = True
  annotations = ('caption',)
  encoder_kinds = ('bert', 'clip', 'openclip')
  input_args = ('prompt',)
  input_help = {'prompt': 'Text prompt (text-to-image models).'}

  def validate(self):
    cs = self.cs
    if cs.n_layer <= 0:
      raise ValueError(f'config.cond_stage.kind={cs.kind} needs config.cond_stage.n_layer > 0')
    if cs.kind in ('clip', 'openclip'):
      heads = cs.get('n_head', 0) or cs.embed_dim // 64
      if cs.embed_dim % heads:
        raise ValueError(
          f'config.cond_stage.embed_dim={cs.embed_dim} does not split into '
          f'{heads} heads: set config.cond_stage.n_head to a divisor'
        )
      if cs.kind == 'clip' and cs.get('projection_dim', 0):
        raise ValueError("config.cond_stage.projection_dim is OpenCLIP's: use kind='openclip'")

  @property
  def tokenizer(self):
    cs = self.cs
    if cs.kind == 'bert':
      return tokenizer_lib.cached_bert_tokenizer(cs.tokenizer)
    return tokenizer_lib.cached_clip_tokenizer(cs.tokenizer, cs.pad_token_id)

  def build_encoder(self):
    text = TextEncoderConfig.from_config(self.config)
    if text.kind == 'bert':
      return BERTEmbedder(
        n_embed=text.width,
        n_layer=text.layers,
        vocab_size=text.vocab_size,
        max_seq_len=text.max_len,
        token_init_std=text.token_init_std,
      )
    cls = FrozenCLIPEmbedder if text.kind == 'clip' else FrozenOpenCLIPEmbedder
    return cls(**text.clip_fields())

  def encode(self, ldm, params, first_stage_params, cond):
    if jnp.issubdtype(cond.dtype, jnp.floating):  # contexts from data.text_cache: encoded already
      return cond
    ctx = ldm.cond_stage.apply({'params': params['cond_stage']}, cond)
    if not self.cs.get('mask_padding', False):
      return ctx  # the reference: cross-attention reads the padding too
    return {'crossattn': ctx, 'crossattn_mask': cond != self.pad_id}

  @property
  def pad_id(self) -> int:
    return 0 if self.cs.kind == 'bert' else int(self.cs.pad_token_id)

  def encoder_input(self, batch=1):
    return np.zeros((batch, self.cs.max_seq_len), np.int32)

  def tokenize(self, prompts) -> np.ndarray:
    return tokenizer_lib.tokenize(self.tokenizer, list(prompts), self.cs.max_seq_len)

  def user_condition(self, num, prompt=None):
    """A prompt (or a list of num prompts) -> token ids [num, max_seq_len], as BERTEmbedder's
    tokenizer does (truncated and padded to max_seq_len, no attention mask)."""
    prompts = [prompt] * num if isinstance(prompt, str) else list(prompt)
    if len(prompts) != num:
      raise TaskInputError(f'got {len(prompts)} prompts for {num} samples')
    return self.tokenize(prompts), None, None

  def caption_index(self, example, position: int) -> int:
    """Which of ``example``'s captions training (and evaluation) reads at ``position``: drawn by
    the position's seeded generator."""
    caps = example['caption']
    return int(self.rng(position).integers(1 if isinstance(caps, str) else len(caps)))

  def caption_for(self, example, position: int) -> str:
    caps = [example['caption']] if isinstance(example['caption'], str) else list(example['caption'])
    return caps[self.caption_index(example, position)]

  def training_condition(self, examples, positions):
    """Token ids [B, L], or with data.text_cache the drawn captions' contexts [B, L, D]."""
    if 'text_context' in examples[0]:
      pairs = zip(examples, positions)
      return np.stack([e['text_context'][self.caption_index(e, p)] for e, p in pairs])
    return self.tokenize([self.caption_for(e, p) for e, p in zip(examples, positions)])

  def null_condition(self, cond):
    return self.tokenize([''] * len(cond))

  def negative_condition(self, num, negative_prompt, cond=None):
    """The guidance's unconditional input from a negative prompt (or num of them), as diffusers'
    pipelines use it: in place of the empty prompt."""
    return self.user_condition(num, negative_prompt)[0]

  def tiles(self, cond, height, width):
    from ldm_jax.tasks.tiles import text_tiles

    texts = self.tokenizer.batch_decode(np.asarray(cond).tolist(), skip_special_tokens=True)
    return text_tiles(texts, height, width)
