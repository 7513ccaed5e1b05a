"""Text-to-image (LAION txt2img, COCO text2img): a caption -> BERT WordPiece token ids [B, 77]
(``tasks.tokenizer``) -> the BERTEmbedder transformer, cross-attention. The empty prompt is the
unconditional input (txt2img.py). Training picks one of an image's captions at random."""

from __future__ import annotations

import numpy as np

from ldm_jax.nn.encoders import BERTEmbedder
from ldm_jax.tasks import tokenizer as tokenizer_lib
from ldm_jax.tasks.base import Task, TaskInputError


class TextToImage(Task):
  name = 'text'
  annotations = ('caption',)
  encoder_kinds = ('bert',)
  input_args = ('prompt',)

  def validate(self):
    if self.cs.n_layer <= 0:
      raise ValueError('config.cond_stage.kind=bert needs config.cond_stage.n_layer > 0')

  @property
  def tokenizer(self):
    return tokenizer_lib.cached_bert_tokenizer(self.cs.tokenizer)

  def build_encoder(self):
    cs = self.cs
    return BERTEmbedder(
      n_embed=cs.embed_dim, n_layer=cs.n_layer, vocab_size=cs.vocab_size, max_seq_len=cs.max_seq_len
    )

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

  def training_condition(self, examples, positions):
    captions = []
    for e, p in zip(examples, positions):
      caps = [e['caption']] if isinstance(e['caption'], str) else list(e['caption'])
      captions.append(caps[int(self.rng(p).integers(len(caps)))])
    return self.tokenize(captions)

  def null_condition(self, cond):
    return self.tokenize([''] * len(cond))

  def tiles(self, cond, height, width):
    from ldm_jax.tasks.tiles import text_tiles

    texts = self.tokenizer.batch_decode(np.asarray(cond).tolist(), skip_special_tokens=True)
    return text_tiles(texts, height, width)
