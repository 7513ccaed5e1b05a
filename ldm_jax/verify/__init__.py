"""A parity certificate for a converted checkpoint: ``python -m ldm_jax.verify --workdir=W
--source=PATH`` runs the JAX model in W and the PyTorch original it was converted from (loaded
with diffusers: ``verify.reference``) on the same inputs, component by component, and writes
W/verify.json with a printed table:

  tokens        our tokenizer's ids against the source's tokenizer (folders that have one)
  text encoder  the conditioning (CLIP / OpenCLIP / LDMBert states) of a few prompts
  unet          the raw UNet output on the same latents, timesteps and context
  vae encode    the first stage's latents (KL posterior mode, VQ pre-quantisation)
  vae decode    images from the same latents
  trajectory    a short guided DDIM run from the same starting latents (diffusers' DDIMScheduler
                set up as the CompVis grid), decoded: max error and PSNR
  round trip    W exported back to the source's format, compared tensor for tensor

Each row has the max absolute error, the max relative error (to the reference's largest value)
and passes under ``TOLERANCE`` (float32 on the CPU: 1e-4 relative). The exit status is 1 when a
row fails.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ldm_jax import optional, storage
from ldm_jax.errors import UserError
from ldm_jax.verify.common import PROMPTS, TOLERANCE, compare
from ldm_jax.verify.common import nchw as _nchw
from ldm_jax.verify.common import nhwc as _nhwc
from ldm_jax.verify.reference import Reference, load_reference
from ldm_jax.verify.trajectory import round_trip_row, trajectory_row


def verify(workdir: str, source: str, *, use_ema: bool = True, steps: int = 4, guidance_scale=4.0):
  """The certificate (a dict; see the module doc) of ``workdir`` against ``source``."""
  for name in ('torch', 'diffusers'):
    optional.require(name, 'python -m ldm_jax.verify (the PyTorch side)')
  import jax

  import ldm_jax

  pipe = ldm_jax.load(workdir, use_ema=use_ema)
  if pipe.ldm is None:
    raise UserError(f'{workdir} holds an autoencoder; verify compares LDM workdirs')
  ref = load_reference(source, pipe.config, use_ema)
  _check_same_model(pipe, ref)
  rows, context = _text_rows(pipe, ref)
  rows.append(_unet_row(pipe, ref, context))
  rows += _first_stage_rows(pipe, ref)
  rows.append(trajectory_row(pipe, ref, steps, guidance_scale))
  with tempfile.TemporaryDirectory() as tmp:
    rows.append(round_trip_row(workdir, source, ref, tmp))
  import diffusers
  import torch

  report = {
    'workdir': storage.resolve(workdir),
    'source': source,
    'step': int(pipe.step),
    'use_ema': use_ema,
    'dtype': 'float32',
    'tolerance': TOLERANCE,
    'devices': {'jax': jax.devices()[0].device_kind, 'torch': 'cpu'},
    'versions': {
      'jax': jax.__version__,
      'torch': torch.__version__,
      'diffusers': diffusers.__version__,
    },
    'components': rows,
    'passed': all(r['passed'] for r in rows),
  }
  return report


def _check_same_model(pipe, ref: Reference) -> None:
  """One line, not a shape traceback, when the source is another model."""
  from ldm_jax.config import UNetConfig

  u = UNetConfig.from_config(pipe.config)
  ours = {
    'in_channels': u.in_channels,
    'out_channels': u.out_channels,
    'block_out_channels': [u.model_channels * m for m in u.channel_mult],
  }
  theirs = {k: ref.unet.config[k] for k in ours}
  theirs['block_out_channels'] = list(theirs['block_out_channels'])
  diffs = [f'{k}: {v} here, {theirs[k]} in the source' for k, v in ours.items() if theirs[k] != v]
  if diffs:
    raise UserError(
      'the source is not the model of this workdir (unet ' + '; '.join(diffs) + '): give the '
      'file or folder the workdir was converted from'
    )


def _text_rows(pipe, ref: Reference) -> tuple[list, object]:
  """(rows for the tokens and the text encoder, our context for the UNet row) of PROMPTS."""
  import jax
  import torch

  task = pipe.ldm.task
  if ref.text is None or not hasattr(task, 'tokenize'):
    return [], None
  tokens = np.asarray(task.tokenize(list(PROMPTS)))
  rows = []
  if ref.tokenizer is not None:
    want = ref.tokenizer(
      list(PROMPTS), padding='max_length', max_length=tokens.shape[1], truncation=True
    ).input_ids
    wrong = int(np.sum(tokens != np.asarray(want)))
    rows.append({'component': 'tokens', 'mismatches': wrong, 'passed': wrong == 0})
  cond = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, tokens)
  with torch.no_grad():
    theirs = ref.text(torch.from_numpy(tokens.astype(np.int64)))[0].numpy()
  rows.append(compare('text encoder', cond['crossattn'], theirs, prompts=list(PROMPTS)))
  return rows, np.asarray(cond['crossattn'])


def _unet_row(pipe, ref: Reference, context) -> dict:
  import torch

  from ldm_jax.config import UNetConfig
  from ldm_jax.latent_diffusion import latent_shape

  h, w, _ = latent_shape(pipe.config)
  n = 3 if context is None else len(context)
  x = np.random.default_rng(0).normal(
    size=(n, h, w, UNetConfig.from_config(pipe.config).in_channels)
  )
  x, t = x.astype(np.float32), np.array([10, 500, 990][:n] + [250] * max(0, n - 3))
  ours = pipe.ldm.unet.apply({'params': pipe.params['unet']}, x, t, context)
  kwargs = {} if context is None else {'encoder_hidden_states': torch.from_numpy(np.array(context))}
  with torch.no_grad():
    theirs = _nhwc(ref.unet(_nchw(x), torch.from_numpy(t), **kwargs).sample)
  return compare('unet', ours, theirs, timesteps=t.tolist())


def _first_stage_rows(pipe, ref: Reference) -> list[dict]:
  import diffusers
  import torch

  f, c = pipe.downsampling, pipe.config.first_stage.embed_dim
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, size=(2, 8 * f, 8 * f, 3)).astype(np.float32)
  latents = rng.normal(size=(2, 8, 8, c)).astype(np.float32)
  ours_z = pipe.ldm.encode(pipe.first_stage_params, images)
  ours_x = pipe.ldm.decode(pipe.first_stage_params, latents, 1.0)
  with torch.no_grad():
    enc = ref.vae.encode(_nchw(images))
    if isinstance(ref.vae, diffusers.AutoencoderKL):
      theirs_z = enc.latent_dist.mode()
    else:
      theirs_z = enc.latents
    theirs_x = ref.vae.decode(_nchw(latents)).sample
  return [
    compare('vae encode', ours_z, _nhwc(theirs_z)),
    compare('vae decode', ours_x, _nhwc(theirs_x)),
  ]


def write_report(report: dict, out: str) -> None:
  storage.write_text(out, json.dumps(report, indent=2) + '\n')


def table(report: dict) -> str:
  """The certificate as a printed table."""
  lines = [f'{"component":<14} {"max abs":>10} {"max rel":>10}  result  notes']
  for r in report['components']:
    mark = 'pass' if r['passed'] else 'FAIL'
    if 'max_abs' in r:
      lines.append(f'{r["component"]:<14} {r["max_abs"]:10.3g} {r["max_rel"]:10.3g}  {mark:6}  '
                   + _notes(r))  # fmt: skip
    else:
      lines.append(f'{r["component"]:<14} {"":>10} {"":>10}  {mark:6}  ' + _notes(r))
  verdict = 'PASSED' if report['passed'] else 'FAILED'
  lines.append(
    f'{verdict}: {report["workdir"]} against {report["source"]} (float32, tolerance '
    f'{report["tolerance"]:g} relative; {os.path.basename(report["workdir"])}/verify.json)'
  )
  return '\n'.join(lines)


def _notes(row: dict) -> str:
  parts = []
  for key in ('psnr_db', 'mismatches', 'skipped', 'error', 'tensors', 'different'):
    if key in row and (row[key] or key == 'mismatches'):
      parts.append(f'{key}={row[key]}')
  for key in ('only_in_source', 'only_in_export'):
    if row.get(key):
      more = '...' if len(row[key]) > 3 else ''
      parts.append(f'{key}={row[key][:3]}{more}')
  return ' '.join(parts)
