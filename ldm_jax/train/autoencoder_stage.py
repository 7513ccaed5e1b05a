"""Stage 1: the autoencoder (KL or VQ) with its perceptual and adversarial losses. The loop
(``train.loop``) asks it for the initial state, the step, the frozen inputs and the image grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.data import make_train_iterator
from ldm_jax.images import make_grid, to_uint8
from ldm_jax.latent_diffusion import build_discriminator, build_first_stage
from ldm_jax.nn.lpips import make_lpips
from ldm_jax.parallel import sharding
from ldm_jax.train.autoencoder_step import make_autoencoder_step
from ldm_jax.train.state import TrainState, init_loss_state, make_optimizer


class AutoencoderStage:
  grid_name = 'reconstructions'

  def __init__(self, config, mesh):
    self.config, self.mesh = config, mesh
    L = config.first_stage_loss
    self.model = build_first_stage(config.first_stage)
    self.disc = build_discriminator(config)
    self.tx = make_optimizer(config)
    tx_disc = make_optimizer(config) if self.disc is not None else None  # same lr and betas
    tx_logvar = make_optimizer(config) if L.train_logvar else None
    self.lpips_params, lpips_fn = (
      make_lpips(L.lpips_weights) if L.perceptual_weight > 0 else (None, None)
    )
    self._tx_disc, self._tx_logvar = tx_disc, tx_logvar
    self.step = make_autoencoder_step(
      self.model, self.tx, config, self.disc, tx_disc, lpips_fn, tx_logvar
    )
    self._grid_fn = None

  # -- state -----------------------------------------------------------------------------------
  def init_state(self, key) -> TrainState:
    size, L = self.config.data.image_size, self.config.first_stage_loss
    params = self.model.init(key, jnp.zeros((1, size, size, 3), jnp.float32))['params']
    disc_input = jnp.zeros((1, size, size, L.disc_in_channels), jnp.float32)
    loss_state = init_loss_state(
      self.config, jax.random.fold_in(key, 1), self.disc, disc_input, self._tx_disc, self._tx_logvar
    )
    return TrainState.create(params, self.tx, self.config.training.use_ema, 1.0, loss_state)

  def first_stage_shapes(self):
    """No frozen first stage: this stage trains it."""
    return None

  def load_first_stage(self):
    return None

  def frozen(self, first_stage_params):
    """The step's frozen input: the LPIPS network, replicated (or None)."""
    repl = sharding.replicated(self.mesh)
    lpips = jax.device_put(self.lpips_params, repl) if self.lpips_params is not None else None
    return lpips, repl

  def abstract_frozen(self):
    """The step's frozen input as ShapeDtypeStructs with shardings (compiling without weights)."""
    repl = sharding.replicated(self.mesh)
    return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=repl), self.lpips_params
    )

  # -- data ------------------------------------------------------------------------------------
  def train_iterator(self, position: int, first_stage_params, params=None):
    return make_train_iterator(
      self.config,
      start_position=position,
      process=(jax.process_index(), jax.process_count()),
    )

  def first_batch(self, state, next_batch, key, first_stage_params):
    """ActNorm's data-dependent init, on what the reference's D sees first: reconstructions of
    the first training batch by the initial autoencoder. Returns (state, that batch or None)."""
    if self.disc is None or not self.config.first_stage_loss.use_actnorm:
      return state, None
    batch = next_batch()
    model = self.model
    rec = jax.jit(lambda p, x: model.apply({'params': p}, x, jax.random.fold_in(key, 3))[0])(
      state.params, batch['image']
    )
    ls = dict(state.loss_state)
    ls['disc'] = dict(self.disc.init(jax.random.fold_in(key, 4), rec))
    return state.replace(loss_state=ls), batch

  # -- images ----------------------------------------------------------------------------------
  def grid(self, step, state, batch, first_stage_params, n: int) -> np.ndarray:
    """Pairs (input | reconstruction by the EMA weights) of the batch's first ``n`` images."""
    params = state.ema_params if state.ema_params is not None else state.params
    if self._grid_fn is None:
      model = self.model
      self._grid_fn = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])
    x = batch['image'][:n]
    rec = self._grid_fn(params, x)
    pairs = np.concatenate([sharding.to_host(to_uint8(x)), sharding.to_host(to_uint8(rec))], axis=2)
    return make_grid(pairs, nrow=4)

  def evaluator(self, workdir):
    return None
