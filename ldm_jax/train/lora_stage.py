"""The LoRA stage (config.lora.rank > 0): trains low-rank adapters (ldm_jax/nn/lora.py) of the
model of ``training.init_from``, which stays frozen.

The train state holds the adapters alone (their optimizer state and EMA, if any): the base model
and its first stage are the step's frozen input, read from ``training.init_from`` at every start
and never written, so a checkpoint holds the adapters and the config that points at their base.
Each step merges the adapters into the base weights and runs the LDM step on the result;
gradients reach only the adapters. Samples during training (and ``ldm_jax.load`` of the run) use
the merged weights."""

from __future__ import annotations

import logging

import jax

from ldm_jax.config.adapters import parse_targets
from ldm_jax.latent_diffusion import latent_shape
from ldm_jax.nn import lora as lora_lib
from ldm_jax.parallel import sharding
from ldm_jax.train.ldm_stage import LDMStage, load_first_stage, load_init_source
from ldm_jax.train.ldm_step import make_ldm_step
from ldm_jax.train.state import TrainState, plain_optimizer

log = logging.getLogger('ldm_jax')


class LoRAStage(LDMStage):
  def __init__(self, config, mesh):
    super().__init__(config, mesh)
    self.tx = plain_optimizer(config)  # every adapter trains (text ones too)
    self.step = make_ldm_step(self.ldm, self.tx, config)
    self._frozen = None  # (first stage, base params) on the mesh, once read
    self._raw = None  # init_from's state, read by init_from() for frozen() to place
    scaling = lora_lib.scaling(config)
    self._merge = jax.jit(lambda base, adapters: lora_lib.merge(base, adapters, scaling))

  def _base_shapes(self):
    key = jax.random.PRNGKey(0)
    return jax.eval_shape(lambda k: self.ldm.init_params(k, latent_shape(self.config)), key)

  # -- state -----------------------------------------------------------------------------------
  def init_state(self, key) -> TrainState:
    c = self.config
    layers = lora_lib.target_layers(self._base_shapes(), parse_targets(c.lora.targets))
    adapters = lora_lib.init_adapters(key, layers, c.lora.rank)
    return TrainState.create(adapters, self.tx, c.training.use_ema, c.diffusion.scale_factor)

  def init_from(self, state, state_sh) -> TrainState:
    """A fresh run: the base's scale factor (its weights are the frozen input, not the state)."""
    step, raw = self._raw = load_init_source(self.config)
    n = lora_lib.count(jax.device_get(state.params))
    total = sum(x.size for x in jax.tree.leaves(raw['params']))
    log.info(
      "LoRA of %s (step %d): %d adapter parameters (%.3g%% of the model's %d) on %s",
      self.config.training.init_from,
      step,
      n,
      100.0 * n / total,
      total,
      self.config.lora.targets,
    )
    sf = jax.device_put(jax.numpy.float32(raw.get('scale_factor', 1.0)), state_sh.scale_factor)
    return state.replace(scale_factor=sf)

  def first_stage_shapes(self):
    """None: the first stage is part of the frozen base, read from init_from, not checkpointed."""
    return None

  def load_first_stage(self):
    return None

  def _base_shardings(self):
    abstract = self._base_shapes()
    return sharding.state_shardings(abstract, self.mesh, self.config.mesh)

  def frozen(self, first_stage_params):
    """((first stage, base parameters), their shardings), read from training.init_from."""
    fs_sh = super().first_stage_shapes()  # sets self._fs_sh
    fs_sh = jax.tree.map(lambda a: a.sharding, fs_sh)
    base_sh = self._base_shardings()
    if self._frozen is None:
      _, raw = self._raw or load_init_source(self.config)
      self._raw = None
      base = jax.device_put(raw['params'], base_sh)
      self._frozen = (jax.device_put(load_first_stage(self.config), fs_sh), base)
    return self._frozen, (fs_sh, base_sh)

  def abstract_frozen(self):
    base = sharding.with_shardings(self._base_shapes(), self._base_shardings())
    return (super().first_stage_shapes(), base)

  def merged(self, adapters):
    """The model's parameters: the base with ``adapters`` merged in."""
    return self._merge(self._frozen[1], adapters)

  # -- data and images -------------------------------------------------------------------------
  def train_iterator(self, position: int, first_stage_params, params=None):
    first_stage, base = self._frozen
    return super().train_iterator(position, first_stage, base)

  def first_batch(self, state, next_batch, key, first_stage_params):
    """No scale_by_std: the latents are scaled as the base model's."""
    return state, None

  def grid(self, step, state, batch, first_stage_params, n: int):
    adapters = state.ema_params if state.ema_params is not None else state.params
    merged = state.replace(params=self.merged(adapters), ema_params=None)
    return super().grid(step, merged, batch, self._frozen[0], n)
