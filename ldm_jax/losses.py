"""First-stage training losses as named terms (reference: ldm/modules/losses/contperceptual.py and
taming's vqperceptual.py without LPIPS/GAN). Each function returns a dict of scalars whose 'loss'
entry is the total to minimise; perceptual and adversarial terms join as further entries."""
from __future__ import annotations

import jax.numpy as jnp

from ldm_jax.distributions import DiagonalGaussian


def kl_autoencoder_terms(x, rec, posterior: DiagonalGaussian, kl_weight: float, logvar=0.0):
  """nll = |x - rec| / exp(logvar) + logvar, summed per sample and averaged over the batch (a SUM
  over pixels, as the reference); total = nll_loss + kl_weight * kl_loss. ``logvar`` is the
  reference's scalar (0, never optimised there)."""
  batch = x.shape[0]
  rec_err = jnp.abs(x.astype(jnp.float32) - rec.astype(jnp.float32))
  nll_loss = jnp.sum(rec_err / jnp.exp(logvar) + logvar) / batch
  kl_loss = jnp.sum(posterior.kl()) / batch
  return {'loss': nll_loss + kl_weight * kl_loss, 'rec_loss': jnp.mean(rec_err),
          'nll_loss': nll_loss, 'kl_loss': kl_loss}


def vq_autoencoder_terms(x, rec, codebook_loss, codebook_weight: float, indices, n_embed: int):
  """nll = mean |x - rec| (a MEAN, as taming's VQ loss); total = nll + codebook_weight * codebook.
  Also reports codebook perplexity and the fraction of codes used in the batch."""
  rec_loss = jnp.mean(jnp.abs(x.astype(jnp.float32) - rec.astype(jnp.float32)))
  counts = jnp.bincount(indices.reshape(-1), length=n_embed)
  probs = counts / jnp.maximum(jnp.sum(counts), 1)
  perplexity = jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10)))
  return {'loss': rec_loss + codebook_weight * codebook_loss, 'rec_loss': rec_loss,
          'nll_loss': rec_loss, 'codebook_loss': codebook_loss, 'perplexity': perplexity,
          'codebook_usage': jnp.mean(counts > 0)}
