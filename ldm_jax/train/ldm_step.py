"""The LDM's training step: LatentDiffusion.p_losses on first-stage latents of the batch (the
first stage frozen), with condition dropout for classifier-free guidance and gradient
accumulation; and the reference's scale_by_std."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ldm_jax.diffusion.gaussian import LossSpec, diffusion_loss, q_sample
from ldm_jax.latent_diffusion import LatentDiffusion, latent_shape
from ldm_jax.nn import lora as lora_lib
from ldm_jax.train.state import TrainState, frozen_cond_stage
from ldm_jax.train.step_common import apply_gradients, step_key


def drop_condition(drop, cond, null):
  """Classifier-free guidance training: replace the condition of each example where ``drop`` [B]
  is True by ``null`` (the null class, the empty prompt's tokens, the empty layout; one example,
  no batch axis). A dict condition drops the entries ``null`` holds (text inpainting: the prompt)."""
  if isinstance(cond, dict):
    return {**cond, **{k: drop_condition(drop, cond[k], v) for k, v in null.items()}}
  return jnp.where(
    drop.reshape((-1,) + (1,) * (cond.ndim - 1)), jnp.asarray(null, cond.dtype), cond
  )


def micro_batches(tree, k: int):
  """Split every leaf's batch axis into ``k`` micro-batches [k, B/k, ...]; micro-batch i holds
  examples i, i+k, i+2k, ... so that each stays spread evenly over the devices the batch is
  sharded on (contiguous rows per device)."""
  return jax.tree.map(
    lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1), tree
  )


def example_draws(key, n: int, shape, timesteps: int, p_uncond: float, loss=None) -> dict:
  """Each example's random draws from its own key (split from ``key`` by batch index): the
  posterior sample's noise, t, the diffusion noise and the condition-dropout coin; with the
  ``loss`` (LossSpec) recipes, the offset noise's per-channel draw and the input perturbation
  (from keys folded out of the example's, so the other draws stay as without them)."""

  def one(k):
    k_post, k_t, k_noise, k_uncond = jax.random.split(k, 4)
    out = {
      'post': jax.random.normal(k_post, shape),
      'noise': jax.random.normal(k_noise, shape),
      't': jax.random.randint(k_t, (), 0, timesteps),
      'drop': jax.random.uniform(k_uncond) < p_uncond,
    }
    if loss is not None and loss.noise_offset:
      out['offset'] = jax.random.normal(jax.random.fold_in(k, 1), (shape[-1],))
    if loss is not None and loss.input_perturbation:
      out['perturb'] = jax.random.normal(jax.random.fold_in(k, 2), shape)
    return out

  return jax.vmap(one)(jax.random.split(key, n))


def training_noise(draws: dict, loss) -> tuple:
  """(the noise the target is made of, the noise the model's input is made with): diffusers'
  text-to-image recipes. Offset noise adds ``noise_offset`` x a per-sample, per-channel normal
  draw; input perturbation adds ``input_perturbation`` x a fresh normal draw to the input's noise
  only."""
  noise = draws['noise']
  if 'offset' in draws:
    noise = noise + loss.noise_offset * draws['offset'][:, None, None, :]
  if 'perturb' in draws:
    return noise, noise + loss.input_perturbation * draws['perturb']
  return noise, noise


def ldm_grads_fn(ldm: LatentDiffusion, loss: LossSpec, null, frozen: bool = False):
  """grads(params, batch, draws, k_drop, first_stage_params, scale_factor) -> (gradients,
  metrics) of the diffusion ``loss`` on one (micro-)batch; ``null``: the task's null condition
  for condition dropout (None: none); ``frozen``: the conditioning encoder is not trained (zero
  gradients)."""

  def grads(params, batch, draws, k_drop, first_stage_params, scale_factor, materialize=None):
    """``materialize``: trained parameters -> the model's (LoRA: adapters merged into the frozen
    weights); by default they are the model's."""
    z0 = jax.lax.stop_gradient(
      ldm.latents_from_batch(
        first_stage_params, batch, noise=draws['post'], scale_factor=scale_factor
      )
    )
    cond = None
    if ldm.task.has_condition:
      # 'cond': the raw condition (data pipeline); class batches may give just their 'label'
      use_label = 'cond' not in batch and ldm.task.label_is_condition
      cond = batch['label'] if use_label else batch['cond']
      if null is not None:
        cond = drop_condition(draws['drop'], cond, null)
    t = draws['t']
    noise, input_noise = training_noise(draws, loss)
    x_t = q_sample(ldm.schedule, z0, t, input_noise)

    def loss_fn(p):
      if frozen and 'cond_stage' in p:  # no gradient flows into a frozen encoder (none computed)
        p = {**p, 'cond_stage': jax.lax.stop_gradient(p['cond_stage'])}
      p = materialize(p) if materialize is not None else p
      c = ldm.conditioning(p, first_stage_params, cond)  # inside: the encoder is trained
      out = ldm.model_output(p, x_t, t, c, dropout_key=k_drop).astype(jnp.float32)
      weight = batch.get('loss_weight')  # config.dreambooth: instance / prior examples
      return diffusion_loss(ldm.schedule, out, z0, noise, t, loss, example_weight=weight)

    (_, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return g, metrics

  return grads


def accumulate(fn, batch, draws, k_drop, accum: int):
  """The mean of ``fn(micro-batch, its draws, key)`` over ``accum`` micro-batches, in a scan."""
  if accum == 1:
    return fn(batch, draws, k_drop)

  def body(total, xs):
    i, (b, dr) = xs
    out = fn(b, dr, jax.random.fold_in(k_drop, i))
    return jax.tree.map(jnp.add, total, out), None

  micro = micro_batches((batch, draws), accum)
  zeros = jax.tree.map(
    lambda a: jnp.zeros(a.shape, a.dtype),
    jax.eval_shape(fn, *jax.tree.map(lambda x: x[0], micro), k_drop),
  )
  total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
  return jax.tree.map(lambda x: x / accum, total)


def make_ldm_step(ldm: LatentDiffusion, tx, config):
  """LatentDiffusion.p_losses on first-stage latents of the batch (first stage frozen). A
  conditional batch holds its raw condition under 'cond'.

  Every random draw of an example (posterior sample, t, noise, condition dropout) comes from its
  own key, split from fold_in(seed, step) by its index in the global batch, so the step's result
  does not depend on how the batch is split: over devices, or into ``grad_accum_steps``
  micro-batches whose gradients are averaged in a scan (a global batch larger than memory).
  With compute_dtype 'bfloat16' the model computes in bf16 (``ldm`` built so); latents, losses,
  gradients and parameters stay fp32."""
  d, cs = config.diffusion, config.cond_stage
  frozen = frozen_cond_stage(config)
  null = None
  if ldm.task.has_condition and cs.p_uncond > 0:
    if config.data.get('text_cache'):  # contexts, not tokens: the empty prompt's, from the cache
      from ldm_jax.data.text_cache import null_context

      null = ldm.task.null_cached(null_context(config, ldm.task.cache_row_shape()))
    else:
      null = ldm.task.null_example()  # the task's null condition, one example
  loss = LossSpec.from_config(d)
  lora = config.get('lora') and config.lora.rank > 0
  grads_of = ldm_grads_fn(ldm, loss, null, frozen and not lora)  # LoRA: the base is frozen input

  def step(state: TrainState, batch, frozen_input):
    """``frozen_input``: the first stage's parameters, or with LoRA (them, the base model's)."""
    first_stage_params, materialize = frozen_input, None
    if lora:
      first_stage_params, base = frozen_input
      materialize = lambda adapters: lora_lib.merge(base, adapters, lora_lib.scaling(config))
    k_examples, k_drop = jax.random.split(step_key(config, state.step))
    n = jax.tree.leaves(batch)[0].shape[0]
    # the batch's own latent shape: data.buckets gives each batch its bucket's
    shape = latent_shape(config, batch['image'].shape[1:3] if 'image' in batch else None)
    draws = example_draws(k_examples, n, shape, d.timesteps, cs.p_uncond, loss)
    fn = lambda b, dr, kd: grads_of(
      state.params, b, dr, kd, first_stage_params, state.scale_factor, materialize
    )
    grads, metrics = accumulate(fn, batch, draws, k_drop, config.training.grad_accum_steps)
    state, extra = apply_gradients(state, grads, tx, config)
    return state, {**metrics, **extra}

  return step


def latent_std(ldm: LatentDiffusion, first_stage_params, batch, key):
  """std over all elements of the first batch's (sampled) latents; scale_factor = 1 / this
  (the reference's scale_by_std, paper appendix D.1/G)."""
  return jnp.std(ldm.latents_from_batch(first_stage_params, batch, key).astype(jnp.float32))
