"""Given embeddings (retrieval-augmented diffusion, rdm_768; knn2img.py): precomputed context
tokens [B, L, D] (e.g. CLIP ViT-L/14 embeddings of retrieved neighbours), cross-attended as they
are (cond_stage 'identity'). Zeros are the unconditional input (knn2img.py)."""

from __future__ import annotations

import numpy as np

from ldm_jax import storage
from ldm_jax.tasks.base import Task, TaskInputError, repeat


class GivenEmbeddings(Task):
  name = 'embeddings'
  encoder_kinds = ('identity',)
  input_args = ('embeddings',)

  def user_condition(self, num, embeddings=None):
    """An array [L, D] (repeated) or [num, L, D], or a .npy file of either."""
    emb = storage.load_npy(embeddings) if isinstance(embeddings, str) else np.asarray(embeddings)
    width = self.cs.channels
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
