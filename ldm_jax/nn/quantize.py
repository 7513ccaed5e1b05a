"""Vector quantiser of the VQ first stage (taming VectorQuantizer2, legacy=True, as LDM uses it)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class VectorQuantizer(nn.Module):
  """Nearest-codebook quantisation with a straight-through gradient.

  Loss (legacy variant): mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2), i.e. the commitment
  term has weight 1 and the codebook term weight beta = 0.25 (the reference's naming is swapped).
  """

  n_embed: int
  embed_dim: int
  beta: float = 0.25

  def setup(self):
    bound = 1.0 / self.n_embed
    self.embedding = nn.Embed(
      self.n_embed,
      self.embed_dim,
      embedding_init=lambda k, s, d=jnp.float32: jax.random.uniform(k, s, d, -bound, bound),
    )

  def __call__(self, z: jax.Array):
    """z: [B, H, W, embed_dim] -> (z_q straight-through, codebook loss, indices [B, H, W])."""
    codebook = self.embedding.embedding
    flat = z.reshape(-1, self.embed_dim).astype(jnp.float32)
    dist = (
      jnp.sum(flat**2, axis=1, keepdims=True)
      + jnp.sum(codebook**2, axis=1)[None]
      - 2.0 * flat @ codebook.T
    )
    indices = jnp.argmin(dist, axis=1)
    z_q = codebook[indices].reshape(z.shape).astype(z.dtype)
    sg = jax.lax.stop_gradient
    loss = jnp.mean((sg(z_q) - z) ** 2) + self.beta * jnp.mean((z_q - sg(z)) ** 2)
    z_q = z + sg(z_q - z)
    return z_q, loss, indices.reshape(z.shape[:-1])

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Codebook vectors for integer indices of any shape: [..., embed_dim]."""
    return self.embedding(indices)
