"""The two whole-model rows of the certificate: a short guided DDIM trajectory run by both
implementations from the same starting latents, and the round trip of the workdir back to the
source's format, tensor for tensor."""

from __future__ import annotations

import os

import numpy as np

from ldm_jax.verify.reference import Reference


def _scheduler(config, steps: int):
  """diffusers' DDIMScheduler set up as the CompVis DDIM grid (steps_offset 1, no final alpha
  of one) with the workdir's betas and parameterisation."""
  import diffusers

  d = config.diffusion
  kinds = {'linear': 'scaled_linear', 'sqrt_linear': 'linear'}  # CompVis -> diffusers names
  if d.beta_schedule not in kinds:
    return None
  sched = diffusers.DDIMScheduler(
    num_train_timesteps=d.timesteps,
    beta_start=d.linear_start,
    beta_end=d.linear_end,
    beta_schedule=kinds[d.beta_schedule],
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type={'eps': 'epsilon', 'v': 'v_prediction', 'x0': 'sample'}[d.parameterization],
  )
  sched.set_timesteps(steps)
  return sched


def trajectory_row(pipe, ref: Reference, steps: int, guidance_scale: float) -> dict:
  """Text models: two prompts with guidance against the empty prompt; unconditional models: no
  guidance. Other tasks (their condition has no diffusers-independent form here) are skipped."""
  import torch

  from ldm_jax.latent_diffusion import latent_shape
  from ldm_jax.verify.common import PROMPTS, compare
  from ldm_jax.verify.common import nchw as _nchw
  from ldm_jax.verify.common import nhwc as _nhwc

  task, name = pipe.ldm.task, 'trajectory'
  text = ref.text is not None and hasattr(task, 'tokenize') and not task.fills_a_mask
  if not (text or not task.has_condition):
    return {'component': name, 'passed': True, 'skipped': f'the {task.name} task'}
  sched = _scheduler(pipe.config, steps)
  if sched is None:
    return {'component': name, 'passed': True, 'skipped': 'a schedule diffusers does not name'}
  h, w, c = latent_shape(pipe.config)
  latents = np.random.default_rng(2).normal(size=(2, h, w, c)).astype(np.float32)
  kwargs = dict(prompt=list(PROMPTS[:2]), guidance_scale=guidance_scale) if text else {}
  ours = pipe.sample(2, sampler='ddim', steps=steps, eta=0.0, latents=latents, return_float=True,
                     **kwargs)  # fmt: skip
  contexts = None
  if text:
    tokens = np.asarray(task.tokenize(['', ''] + list(PROMPTS[:2])))
    with torch.no_grad():
      contexts = ref.text(torch.from_numpy(tokens.astype(np.int64)))[0]
  x = _nchw(latents)
  with torch.no_grad():
    for t in sched.timesteps:
      out = _model_out(ref, x, t, contexts, guidance_scale)
      x = sched.step(out, t, x, eta=0.0).prev_sample
    theirs = _nhwc(ref.vae.decode(x / ref.latent_scale).sample)
  a, b = np.clip(ours / 2 + 0.5, 0, 1), np.clip(theirs / 2 + 0.5, 0, 1)
  mse = float(np.mean((a - b) ** 2))
  psnr = float('inf') if mse == 0 else float(10 * np.log10(1.0 / mse))
  return compare(name, ours, theirs, steps=steps, psnr_db=round(psnr, 2))


def _model_out(ref: Reference, x, t, contexts, scale: float):
  """The reference UNet's (guided) output at x, t: [uncond, cond] in one batch."""
  import torch

  if contexts is None:
    return ref.unet(x, t).sample
  both = ref.unet(torch.cat([x, x]), t, encoder_hidden_states=contexts).sample
  u, c = both.chunk(2)
  return u + scale * (c - u)


# -- round trip --------------------------------------------------------------------------------
def round_trip_row(workdir: str, source: str, ref: Reference, tmp: str) -> dict:
  """The workdir exported to the source's format, against the source: the tensors both have must
  be equal (names, shapes, values); the names only one side has are listed."""
  if ref.kind == 'single_file':
    from ldm_jax.convert.compvis import read_state_dict
    from ldm_jax.export.compvis import export_workdir

    out = os.path.join(tmp, 'export.safetensors')
    export_workdir(workdir, out)
    return _compare_tensors(ref.state_dict, read_state_dict(out)[0])
  from ldm_jax.convert.diffusers import read_model_folder
  from ldm_jax.export.diffusers import export_diffusers

  out = os.path.join(tmp, 'export')
  export_diffusers(workdir, out)
  theirs, ours = {}, {}
  for part in ('unet', 'vae', 'vqvae', 'text_encoder', 'bert'):
    if os.path.isdir(os.path.join(ref.folder, part)) and os.path.isdir(os.path.join(out, part)):
      theirs.update(
        {f'{part}.{k}': v for k, v in read_model_folder(os.path.join(ref.folder, part))[1].items()}
      )
      ours.update(
        {f'{part}.{k}': v for k, v in read_model_folder(os.path.join(out, part))[1].items()}
      )
  return _compare_tensors(theirs, ours)


def _text_model_names(tensors: dict) -> dict:
  """transformers 4 names CLIPTextModel's tensors text_model.*, transformers 5 saves them
  without the prefix: the same tensors."""
  return {k.replace('text_encoder.text_model.', 'text_encoder.'): v for k, v in tensors.items()}


def _compare_tensors(source: dict, export: dict) -> dict:
  source, export = _text_model_names(source), _text_model_names(export)
  common = sorted(set(source) & set(export))
  bad = [
    k
    for k in common
    if np.shape(source[k]) != np.shape(export[k])
    or not np.array_equal(np.asarray(source[k], np.float32), np.asarray(export[k], np.float32))
  ]
  return {
    'component': 'round trip',
    'tensors': len(common),
    'different': bad[:20],
    'only_in_source': sorted(set(source) - set(export))[:20],
    'only_in_export': sorted(set(export) - set(source))[:20],
    'passed': not bad and bool(common),
  }
