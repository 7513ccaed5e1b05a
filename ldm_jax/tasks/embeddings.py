"""Given embeddings (retrieval-augmented diffusion, rdm_768; knn2img.py): precomputed context
tokens [B, L, D] (e.g. CLIP ViT-L/14 embeddings of retrieved neighbours), cross-attended as they
are (cond_stage 'identity'). Zeros are the unconditional input (knn2img.py). A prompt instead
becomes knn2img's text conditioning: CLIP's L2-normalised text embedding [B, 1, D], from the CLIP
text model that ``python -m ldm_jax.convert clip`` writes (config.cond_stage.clip_text)."""

from __future__ import annotations

import functools
import json

import numpy as np

from ldm_jax import storage
from ldm_jax.tasks.base import Task, TaskInputError, repeat


@functools.lru_cache(maxsize=2)
def clip_text_embedder(folder: str):
  """prompts -> L2-normalised CLIP text embeddings [B, D] (numpy), from a folder of
  ``python -m ldm_jax.convert clip`` (OpenAI CLIP's encode_text, as knn2img.py's
  FrozenCLIPTextEmbedder with normalize=True)."""
  import jax
  import jax.numpy as jnp
  from flax.traverse_util import unflatten_dict

  from ldm_jax.nn.clip import CLIPTextModel
  from ldm_jax.tasks.tokenizer import load_clip_tokenizer

  if not storage.exists(storage.join(folder, 'params.npz')):
    raise TaskInputError(
      f'config.cond_stage.clip_text={folder!r} holds no params.npz: write it with '
      'python -m ldm_jax.convert clip --path=<transformers CLIP folder> --out=DIR'
    )
  cfg = json.loads(storage.read_text(storage.join(folder, 'config.json')))
  params = unflatten_dict({tuple(k.split('/')): v for k, v in storage.load_npz(
    storage.join(folder, 'params.npz')).items()})  # fmt: skip
  model = CLIPTextModel(**cfg)
  tokenizer = load_clip_tokenizer(folder, pad_token_id=0)  # OpenAI clip.tokenize pads with 0

  @jax.jit
  def embed(tokens):
    z = model.apply({'params': params}, tokens, tokenizer.eot_token_id, method='pooled')
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)

  return lambda prompts: np.asarray(embed(jnp.asarray(tokenizer(prompts, cfg['max_len']))))


class GivenEmbeddings(Task):
  name = 'embeddings'
  encoder_kinds = ('identity',)
  input_args = ('embeddings', 'prompt')
  input_help = {
    'embeddings': 'Context embeddings .npy, [L, D] or [N, L, D] (retrieval-augmented models).',
    'prompt': 'Text prompt (text-to-image models).',
  }
  optional_args = ('embeddings', 'prompt')  # one of the two

  def user_condition(self, num, embeddings=None, prompt=None):
    """An array [L, D] (repeated) or [num, L, D], or a .npy file of either; or a prompt (or num of
    them): its CLIP text embedding (config.cond_stage.clip_text), one token."""
    width = self.cs.channels
    if (embeddings is None) == (prompt is None):
      raise TaskInputError('this model (embeddings) takes --embeddings=FILE.npy or --prompt, one')
    if prompt is not None:
      folder = self.cs.get('clip_text', '')
      if not folder:
        raise TaskInputError(
          'a prompt needs a CLIP text model: python -m ldm_jax.convert clip '
          '--path=<transformers CLIP folder, e.g. openai/clip-vit-large-patch14> --out=DIR, then '
          '--config.cond_stage.clip_text=DIR (or pass --embeddings)'
        )
      prompts = [prompt] * num if isinstance(prompt, str) else list(prompt)
      if len(prompts) != num:
        raise TaskInputError(f'got {len(prompts)} prompts for {num} samples')
      embeddings = clip_text_embedder(folder)(prompts)[:, None, :]
    emb = storage.load_npy(embeddings) if isinstance(embeddings, str) else np.asarray(embeddings)
    if emb.ndim == 2:
      emb = repeat(emb, num)
    if emb.ndim != 3 or emb.shape[0] != num or emb.shape[-1] != width:
      raise TaskInputError(
        f'embeddings must be [L, {width}] or [{num}, L, {width}], got {emb.shape}'
      )
    return emb.astype(np.float32), None, None

  def training_condition(self, examples, positions):
    raise ValueError(
      'training on given embeddings needs a data source that stores them; '
      'ldm_jax has none yet (sample converted rdm weights with embeddings=...)'
    )

  def null_condition(self, cond):
    return np.zeros_like(cond)
