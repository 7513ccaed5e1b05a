"""Diagonal Gaussian posterior of the KL autoencoder (reference: ldm/modules/distributions)."""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class DiagonalGaussian:
  """N(mean, exp(logvar)) per latent element; NHWC arrays."""

  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, moments: jax.Array) -> 'DiagonalGaussian':
    """Split [..., 2c] moments into mean (first half) and logvar (second half, clamped to [-30, 20])."""
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return cls(mean=mean, logvar=jnp.clip(logvar, -30.0, 20.0))

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  def sample(self, key: jax.Array) -> jax.Array:
    noise = jax.random.normal(key, self.mean.shape, self.mean.dtype)
    return self.mean + self.std * noise

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self) -> jax.Array:
    """KL to N(0, I), summed over all but the batch axis: one value per sample."""
    axes = tuple(range(1, self.mean.ndim))
    return 0.5 * jnp.sum(self.mean**2 + jnp.exp(self.logvar) - 1.0 - self.logvar, axis=axes)

  def nll(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(1, self.mean.ndim))
    return 0.5 * jnp.sum(
      math.log(2.0 * math.pi) + self.logvar + (x - self.mean) ** 2 / jnp.exp(self.logvar), axis=axes
    )
