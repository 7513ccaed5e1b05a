"""Conditioning encoders (reference: ldm/modules/encoders/modules.py)."""
from __future__ import annotations

import flax.linen as nn
import jax


class ClassEmbedder(nn.Module):
  """Class label -> one context token [B, 1, embed_dim] for cross-attention. With classifier-free
  guidance the last index (``n_classes - 1``, e.g. 1000 of cin256-v2's 1001) is the null class."""
  embed_dim: int
  n_classes: int = 1000

  @nn.compact
  def __call__(self, labels: jax.Array) -> jax.Array:
    emb = nn.Embed(self.n_classes, self.embed_dim, embedding_init=nn.initializers.normal(1.0),
                   name='embedding')(labels)
    return emb[:, None, :]
