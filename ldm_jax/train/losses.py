"""First-stage training losses as the reference defines them, as pure functions of arrays.

KL autoencoder (ldm/modules/losses/contperceptual.py ``LPIPSWithDiscriminator``):
  rec = |x - x_rec| + perceptual_weight * LPIPS(x, x_rec)     (LPIPS broadcast over the pixels)
  nll = sum(rec / exp(logvar) + logvar) / B                    (a SUM over C, H, W, not a mean)
  loss = nll + kl_weight * sum(KL) / B + d_weight * disc_factor * g_loss
VQ autoencoder (taming ``VQLPIPSWithDiscriminator``, named by the released VQ configs):
  nll = mean(rec);  loss = nll + codebook_weight * codebook_loss + d_weight * disc_factor * g_loss
Both: g_loss = -mean(D(x_rec)); d_weight = clamp(|grad_W nll| / (|grad_W g_loss| + 1e-4), 0, 1e4)
* disc_weight with W the decoder's last conv weight (detached); disc_factor = 0 before
``disc_start`` steps. Discriminator: disc_factor * hinge or vanilla loss on D(x), D(x_rec).

LPIPS is evaluated without the heads' Dropout(0.5): the reference builds it in eval mode (a later
``.train()`` of the Lightning module may re-enable it there; a metric with dropout is not what the
paper describes, so we keep it deterministic).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def nll_loss(x, rec, p_loss, perceptual_weight: float, logvar, kind: str):
  """(nll, mean reconstruction error incl. the perceptual term). ``p_loss`` is [B] or None."""
  rec_err = jnp.abs(x.astype(jnp.float32) - rec.astype(jnp.float32))
  if p_loss is not None:
    rec_err = rec_err + perceptual_weight * p_loss.reshape((-1,) + (1,) * (x.ndim - 1))
  if kind == 'kl':
    nll = jnp.sum(rec_err / jnp.exp(logvar) + logvar) / x.shape[0]
  else:
    nll = jnp.mean(rec_err)
  return nll, jnp.mean(rec_err)


def hinge_d_loss(logits_real, logits_fake):
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def vanilla_d_loss(logits_real, logits_fake):
  return 0.5 * (jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake)))


D_LOSSES = {'hinge': hinge_d_loss, 'vanilla': vanilla_d_loss}


def adopt_weight(weight: float, step, threshold: int):
  """taming's adopt_weight: 0 while step < threshold, else ``weight``."""
  return jnp.where(step < threshold, 0.0, weight)


def adaptive_weight(nll_grad, g_grad, disc_weight: float):
  """The reference's calculate_adaptive_weight from the two gradients at the last layer."""
  d = jnp.linalg.norm(nll_grad.ravel()) / (jnp.linalg.norm(g_grad.ravel()) + 1e-4)
  return jax.lax.stop_gradient(jnp.clip(d, 0.0, 1e4)) * disc_weight


def codebook_stats(indices, n_embed: int) -> dict:
  """Perplexity of the code distribution in a batch and the fraction of codes used in it."""
  counts = jnp.bincount(indices.reshape(-1), length=n_embed)
  probs = counts / jnp.maximum(jnp.sum(counts), 1)
  return {
    'perplexity': jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10))),
    'codebook_usage': jnp.mean(counts > 0),
  }
