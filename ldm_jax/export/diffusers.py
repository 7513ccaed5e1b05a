"""A workdir as a diffusers folder: ``python -m ldm_jax.export --workdir=DIR --format=diffusers
--out=FOLDER``, which ``DiffusionPipeline.from_pretrained(FOLDER)`` loads.

What is written is what ``python -m ldm_jax.convert diffusers`` reads (a round trip gives the same
parameters) and what diffusers runs to the same outputs:

- an autoencoder workdir: one model folder, ``AutoencoderKL`` or ``VQModel``;
- an LDM: a pipeline folder (``model_index.json``, ``unet/``, ``vae/`` or ``vqvae/``,
  ``scheduler/`` = DDIMScheduler with the CompVis DDIM's step offsets, the text encoder and its
  tokenizer), of the pipeline diffusers has for the task: unconditional -> ``LDMPipeline``,
  superres -> ``LDMSuperResolutionPipeline``, BERT text -> ``LDMTextToImagePipeline``, CLIP /
  OpenCLIP text -> ``StableDiffusionPipeline`` (text inpainting: ``StableDiffusionInpaintPipeline``),
  SDXL -> ``StableDiffusionXLPipeline`` (the refiner: ``StableDiffusionXLImg2ImgPipeline``;
  ldm_jax/export/sdxl.py).
  Class-, layout- and segmentation-conditioned LDMs have no diffusers pipeline: export them with
  ``--format=compvis``.

The UNet is the EMA copy when the workdir has one (what ``ldm_jax.load`` samples with). Two
diffusers conventions change the layout, not the function:
- ``LDMSuperResolutionPipeline`` decodes latents without a scale factor, and ldm_jax's diffusers
  importer reads a VQModel's latents unscaled (as the CompVis VQ LDMs on the hub are). A scale
  factor s != 1 there is folded into the exported first stage: ``quant_conv`` times s (KL: its
  mean rows, and + 2 log s on the log-variance bias), a VQ codebook times s (nearest codes do not
  change), ``post_quant_conv``'s weight / s. Its latents are then the LDM's, and its
  ``scaling_factor`` is 1.
- SD 2.x's OpenCLIP text tower conditions with its penultimate layer: exported as the
  ``CLIPTextModel`` of 23 layers that diffusers' SD 2 repositories hold.
"""

from __future__ import annotations

import json
import math

from ldm_jax import storage
from ldm_jax.convert import diffusers_unet
from ldm_jax.errors import UserError
from ldm_jax.export.compvis import compvis_state_dict, jax_to_numpy, read_workdir
from ldm_jax.export.text import clip_text_config, clip_text_tensors, write_model, write_tokenizer

DIFFUSERS_VERSION = '0.42.1'  # the version whose loaders tests/test_export_diffusers.py runs


# -- configs ---------------------------------------------------------------------------------------
def pipeline_class(config) -> str:
  """The diffusers pipeline of an LDM config, or a UserError naming why there is none."""
  from ldm_jax.tasks import task_name

  task, cs = task_name(config), config.cond_stage
  if cs.kind == 'sdxl':
    from ldm_jax.export import sdxl

    return sdxl.pipeline_class(config)
  if cs.kind in ('clip', 'openclip') and task in ('text', 'text_inpainting'):
    if cs.mask_padding:
      raise UserError(
        'cond_stage.mask_padding=True: diffusers attends over the padding tokens, so the exported '
        'model would condition differently; export --format=compvis'
      )
    return (
      'StableDiffusionInpaintPipeline' if task == 'text_inpainting' else 'StableDiffusionPipeline'
    )
  table = {
    ('unconditional', 'none'): 'LDMPipeline',
    ('superres', 'identity'): 'LDMSuperResolutionPipeline',
    ('text', 'bert'): 'LDMTextToImagePipeline',
  }
  name = table.get((task, cs.kind))
  if name is None or (cs.kind == 'bert' and (cs.mask_padding or not cs.use_tokenizer)):
    raise UserError(
      f'diffusers has no pipeline for a {task} LDM (cond_stage.kind={cs.kind!r}): it has '
      'unconditional, superres, BERT text (LDMTextToImagePipeline) and Stable Diffusion ones. '
      'Export it with --format=compvis (the CompVis scripts read that)'
    )
  return name


def vae_config(config, scaling_factor: float) -> dict:
  """The AutoencoderKL / VQModel config.json of config.first_stage."""
  fs = config.first_stage
  if fs.attn_type not in ('vanilla', 'none'):
    raise UserError(f'first_stage.attn_type={fs.attn_type!r} has no diffusers counterpart')
  n = len(fs.ch_mult)
  attn = [fs.attn_type != 'none' and fs.resolution // 2**i in fs.attn_resolutions for i in range(n)]
  out = dict(
    _diffusers_version=DIFFUSERS_VERSION,
    in_channels=fs.in_channels,
    out_channels=fs.out_ch,
    block_out_channels=[fs.ch * m for m in fs.ch_mult],
    layers_per_block=fs.num_res_blocks,
    down_block_types=['AttnDownEncoderBlock2D' if a else 'DownEncoderBlock2D' for a in attn],
    up_block_types=['AttnUpDecoderBlock2D' if a else 'UpDecoderBlock2D' for a in attn[::-1]],
    act_fn='silu',
    norm_num_groups=32,
    sample_size=fs.resolution,
    scaling_factor=float(scaling_factor),
    mid_block_add_attention=fs.attn_type != 'none',
  )
  if fs.kind == 'kl':
    if fs.z_channels != fs.embed_dim:
      raise UserError(
        f"first_stage z_channels={fs.z_channels} != embed_dim={fs.embed_dim}: diffusers' "
        'AutoencoderKL has one latent_channels for both'
      )
    return dict(_class_name='AutoencoderKL', latent_channels=fs.embed_dim, **out)
  return dict(
    _class_name='VQModel',
    latent_channels=fs.z_channels,
    vq_embed_dim=fs.embed_dim,
    num_vq_embeddings=fs.n_embed,
    **out,
  )


def unet_config(config) -> dict:
  """The UNet2DModel / UNet2DConditionModel config.json of config.unet (convert/diffusers_unet)."""
  return diffusers_unet.unet_config(config, DIFFUSERS_VERSION)


def scheduler_config(config) -> dict:
  """DDIMScheduler with the CompVis schedule and DDIM's step offsets (what ldm_jax's DDIM does)."""
  d = config.diffusion
  kinds = {'linear': 'scaled_linear', 'sqrt_linear': 'linear'}  # reference -> diffusers names
  if d.beta_schedule not in kinds:
    raise UserError(
      f'diffusion.beta_schedule={d.beta_schedule!r}: diffusers names only '
      f'{sorted(kinds)} the same way; export --format=compvis'
    )
  return dict(
    _class_name='DDIMScheduler',
    _diffusers_version=DIFFUSERS_VERSION,
    num_train_timesteps=d.timesteps,
    beta_start=d.linear_start,
    beta_end=d.linear_end,
    beta_schedule=kinds[d.beta_schedule],
    prediction_type={'eps': 'epsilon', 'x0': 'sample', 'v': 'v_prediction'}[d.parameterization],
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing='leading',
  )


def ldmbert_config(cs) -> dict:
  """diffusers' LDMBertConfig of the CompVis BERTEmbedder (8 heads of 64, feed-forward 4x)."""
  return dict(
    architectures=['LDMBertModel'],
    model_type='ldmbert',
    vocab_size=cs.vocab_size,
    max_position_embeddings=cs.max_seq_len,
    encoder_layers=cs.n_layer,
    encoder_ffn_dim=4 * cs.embed_dim,
    encoder_attention_heads=8,
    head_dim=64,
    d_model=cs.embed_dim,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    activation_function='gelu',
    init_std=0.02,
    pad_token_id=0,
  )


# -- tensors ---------------------------------------------------------------------------------------
def fold_scale(vae_sd: dict, s: float, kind: str) -> dict:
  """A first stage whose latents are the old ones times s (module doc)."""
  sd = dict(vae_sd)
  w, b = sd['quant_conv.weight'].copy(), sd['quant_conv.bias'].copy()
  rows = w.shape[0] // 2 if kind == 'kl' else w.shape[0]  # KL: [mean, log-variance]
  w[:rows] *= s
  b[:rows] *= s
  if kind == 'kl':
    b[rows:] += 2 * math.log(s)
  else:
    sd['quantize.embedding.weight'] = sd['quantize.embedding.weight'] * s
  sd['quant_conv.weight'], sd['quant_conv.bias'] = w, b
  sd['post_quant_conv.weight'] = sd['post_quant_conv.weight'] / s
  return sd


# -- files -----------------------------------------------------------------------------------------
def check_new_folder(out: str) -> None:
  if storage.isdir(out) and storage.listdir(out):
    raise UserError(f'--out={out} is a folder with files in it: pass a new or empty folder')


def _write_text_encoder(out: str, config, sd: dict, params: dict, index: dict) -> None:
  """The pipeline's text encoder (LDMBert or CLIP) and tokenizer folders, named in ``index``."""
  from ldm_jax.convert.diffusers_names import ldmbert_to_diffusers

  cs = config.cond_stage
  if cs.kind == 'bert':
    tensors = ldmbert_to_diffusers(sd, cs.n_layer)
    write_model(storage.join(out, 'bert'), ldmbert_config(cs), tensors, 'model.safetensors')
    index['bert'] = ['latent_diffusion', 'LDMBertModel']
  elif cs.kind in ('clip', 'openclip'):
    layers = cs.n_layer - (1 if cs.layer == 'penultimate' else 0)
    text = clip_text_tensors(params['cond_stage'], layers)
    write_model(
      storage.join(out, 'text_encoder'), clip_text_config(cs, layers), text, 'model.safetensors'
    )
    index['text_encoder'] = ['transformers', 'CLIPTextModel']
    index.update(safety_checker=[None, None], feature_extractor=[None, None])
    index['requires_safety_checker'] = False
  elif cs.kind == 'sdxl':
    from ldm_jax.export import sdxl

    sdxl.write_text_encoders(out, config, params, index)
  if cs.kind in ('bert', 'clip', 'openclip'):
    index['tokenizer'] = ['transformers', write_tokenizer(storage.join(out, 'tokenizer'), cs)]


# -- the whole export ------------------------------------------------------------------------------
def export_diffusers(workdir: str, out: str, step: int | None = None) -> dict:
  """Write the workdir's checkpoint as a diffusers folder at ``out`` (module doc)."""
  from ldm_jax.convert.diffusers_names import first_stage_to_diffusers, unet_to_diffusers_names

  config, step, state, first_stage = read_workdir(workdir, step)
  params, ema = jax_to_numpy(state['params']), jax_to_numpy(state.get('ema_params'))
  report = {'workdir': workdir, 'step': int(step), 'out': out, 'stage': config.stage}
  if config.stage != 'ldm':
    vae = vae_config(config, 1.0)  # (errors before anything is written)
    check_new_folder(out)
    sd = compvis_state_dict(config, ema if ema is not None else params)
    tensors = first_stage_to_diffusers(sd, config.first_stage, '')
    write_model(out, vae, tensors, 'diffusion_pytorch_model.safetensors')
    return {**report, 'class': vae['_class_name']}

  pipeline = pipeline_class(config)
  unet = unet_config(config)  # (errors before anything is written)
  check_new_folder(out)
  scale = float(state['scale_factor'])
  if ema is not None:
    params = {**params, 'unet': ema['unet']}
  sd = compvis_state_dict(config, params, jax_to_numpy(first_stage), None, scale, step)
  weights = 'diffusion_pytorch_model.safetensors'
  index = {'_class_name': pipeline, '_diffusers_version': DIFFUSERS_VERSION}

  vae_sd = first_stage_to_diffusers(sd, config.first_stage)
  kind = config.first_stage.kind
  fold = pipeline == 'LDMSuperResolutionPipeline' or (kind == 'vq' and pipeline == 'LDMPipeline')
  if fold and scale != 1.0:
    vae_sd, scale = fold_scale(vae_sd, scale, kind), 1.0
  vae_name = 'vae' if pipeline.startswith('StableDiffusion') else 'vqvae'
  vae = vae_config(config, scale)
  write_model(storage.join(out, vae_name), vae, vae_sd, weights)
  index[vae_name] = ['diffusers', vae['_class_name']]
  write_model(storage.join(out, 'unet'), unet, unet_to_diffusers_names(sd, config.unet), weights)
  index['unet'] = ['diffusers', unet['_class_name']]
  storage.write_text(
    storage.join(out, 'scheduler', 'scheduler_config.json'),
    json.dumps(scheduler_config(config), indent=2) + '\n',
  )
  index['scheduler'] = ['diffusers', 'DDIMScheduler']

  _write_text_encoder(out, config, sd, params, index)
  storage.write_text(storage.join(out, 'model_index.json'), json.dumps(index, indent=2) + '\n')
  return {**report, 'class': pipeline, 'components': sorted(k for k in index if k[0] != '_')}
