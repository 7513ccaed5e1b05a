"""A LoRA run's adapters as the files people share: ``python -m ldm_jax.export --workdir=RUN
--format=lora-diffusers|lora-kohya --out=FILE.safetensors``.

lora-diffusers: PEFT's naming as diffusers' ``save_lora_weights`` writes it
(``unet.<module>.lora_A.weight`` [rank, in(, kh, kw)], ``lora_B.weight`` [out, rank(, 1, 1)],
``text_encoder.<module>...``), the scaling alpha / rank folded into lora_B (so a loader's default
alpha, the rank, gives our update); diffusers' ``load_lora_weights`` reads it. lora-kohya:
sd-scripts' naming (``lora_unet_<module with _>.lora_down.weight`` / ``lora_up.weight`` /
``alpha``, ``lora_te_...``), the module named the diffusers way, as kohya writes for diffusers
models. The UNet's modules are named through the converter's renaming plan
(ldm_jax/convert/diffusers_names.py), the text encoder's as transformers names CLIPTextModel's."""

from __future__ import annotations

import ml_collections
import numpy as np
from flax import traverse_util

from ldm_jax import checkpoint as ckpt_lib
from ldm_jax.errors import UserError
from ldm_jax.export.compvis import torch_module_path


def _diffusers_module(tree: str, path: tuple, config) -> tuple[str, str, str]:
  """(diffusers prefix, kohya prefix, the diffusers/transformers module name) of our layer at
  ``path`` in ``tree``. SDXL's text encoders: ``text_encoder`` / ``lora_te1_`` (CLIP ViT-L) and
  ``text_encoder_2`` / ``lora_te2_`` (OpenCLIP bigG), as diffusers and kohya name them."""
  if tree == 'unet':
    from ldm_jax.convert.diffusers_names import unet_to_diffusers_names

    key = f'model.diffusion_model.{torch_module_path(path)}.weight'
    module = next(iter(unet_to_diffusers_names({key: 0}, config.unet))).rsplit('.', 1)[0]
    return 'unet', 'lora_unet_', module
  if config.cond_stage.kind != 'sdxl':  # past 'transformer' / 'model': text_model.encoder...
    return 'text_encoder', 'lora_te_', torch_module_path(path[1:])
  module = torch_module_path(path[2:])  # past embedders_<i> / transformer or model
  if path[0] == 'embedders_1' or not config.cond_stage.first_encoder.embed_dim:
    return 'text_encoder_2', 'lora_te2_', module
  return 'text_encoder', 'lora_te1_', module


def _torch_layout(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Our A [..., in, r], B [r, out] as torch's down [r, in(, kh, kw)] and up [out, r(, 1, 1)]."""
  if a.ndim == 4:
    return np.transpose(a, (3, 2, 0, 1)), np.transpose(b)[:, :, None, None]
  return np.transpose(a), np.transpose(b)


def lora_tensors(config, adapters: dict, fmt: str) -> dict[str, np.ndarray]:
  """The adapters of a LoRA run as a state dict in ``fmt`` ('lora-diffusers' or 'lora-kohya')."""
  from ldm_jax.nn.lora import scaling

  rank, scale = config.lora.rank, scaling(config)
  out = {}
  for tree, part in adapters.items():
    flat = traverse_util.flatten_dict(part)
    for path in sorted({p[:-1] for p in flat}):
      down, up = _torch_layout(
        np.asarray(flat[(*path, 'lora_a')], np.float32),
        np.asarray(flat[(*path, 'lora_b')], np.float32),
      )
      prefix, kohya, module = _diffusers_module(tree, path, config)
      if fmt == 'lora-diffusers':
        out[f'{prefix}.{module}.lora_A.weight'] = down
        out[f'{prefix}.{module}.lora_B.weight'] = up * scale
      else:
        head = kohya + module.replace('.', '_')
        out[f'{head}.lora_down.weight'] = down
        out[f'{head}.lora_up.weight'] = up
        out[f'{head}.alpha'] = np.asarray(scale * rank, np.float32)
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def export_lora(workdir: str, out: str, fmt: str, step: int | None = None) -> dict:
  """Writes the adapters of the LoRA run ``workdir`` (its EMA when it keeps one) to ``out``."""
  from safetensors.numpy import save_file

  from ldm_jax import storage

  saved, step, state, _ = ckpt_lib.load_raw(workdir, step)
  config = ml_collections.ConfigDict(saved)
  if not (config.get('lora') and config.lora.rank > 0):
    raise UserError(
      f'--format={fmt}: {workdir} is not a LoRA run (config.lora.rank is 0); export a whole '
      "model with --format=compvis or 'diffusers'"
    )
  if not out.endswith('.safetensors'):
    raise UserError(f'--format={fmt} writes a .safetensors file: --out={out!r}')
  adapters = state['ema_params'] if state.get('ema_params') is not None else state['params']
  tensors = lora_tensors(config, adapters, fmt)
  local = out if not storage.is_url(out) else storage.cache_dir('export') + '/lora.safetensors'
  save_file(tensors, local, metadata={'format': 'pt'})
  if local != out:
    storage.write_bytes(out, open(local, 'rb').read())
  return {
    'workdir': workdir,
    'step': step,
    'out': out,
    'format': fmt,
    'tensors': len(tensors),
    'parameters': int(sum(v.size for k, v in tensors.items() if not k.endswith('alpha'))),
    'base': config.training.init_from,
  }
