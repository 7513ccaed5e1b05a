"""LoRA files as people share them, merged into a model's weights for sampling:
``ldm_jax.load(W, lora=PATH, lora_scale=1.0)`` and ``sample.py --lora=PATH --lora_scale=S``.

Read: diffusers/PEFT files (``pytorch_lora_weights.safetensors`` of ``save_lora_weights``:
``unet.<module>.lora_A.weight`` / ``lora_B.weight``, or ``lora.down`` / ``lora.up`` as
``convert_state_dict_to_diffusers`` writes them, ``text_encoder.<module>...``, optional ``.alpha``
or the ``lora_adapter_metadata`` diffusers stores beside the tensors) and kohya (sd-scripts) files (``lora_unet_<module>.lora_down.weight`` / ``lora_up`` /
``alpha``, ``lora_te_`` / ``lora_te1_`` / ``lora_te2_``; the module named the diffusers way or, as
kohya writes for generative-models checkpoints, the CompVis way), LoCon included (conv layers).

Each adapter adds scale x (alpha / rank) x up @ down to its layer's weight (conv: over the kernel),
which is what diffusers computes unfused with ``cross_attention_kwargs={'scale': s}`` (or
``set_adapters`` weights). Unknown keys are listed in the error, never dropped; a file for another
base model is one error naming the shapes.
"""

from __future__ import annotations

import re

import numpy as np

from ldm_jax import storage
from ldm_jax.convert.torch_names import ConversionError, flax_leaf_for, torch_to_flax


def read_lora(path: str) -> tuple[dict[str, np.ndarray], dict]:
  """(tensors, adapter metadata) of a LoRA file (.safetensors, or a torch .bin/.pt/.ckpt read
  without torch); the metadata is diffusers' ``lora_adapter_metadata`` (the LoraConfigs: their
  ``lora_alpha``), {} when absent."""
  import json

  from ldm_jax.convert.compvis import read_state_dict

  if not storage.exists(path):
    raise ConversionError(f'--lora={path!r}: no such file')
  meta = {}
  if path.endswith('.safetensors'):
    from safetensors import safe_open

    with safe_open(path, 'np') as f:
      meta = json.loads((f.metadata() or {}).get('lora_adapter_metadata', '{}'))
  return read_state_dict(path, lazy=False)[0], meta


def _metadata_alphas(meta: dict) -> dict[str, float]:
  """{'unet' | 'te' | 'te2': lora_alpha} of diffusers' adapter metadata."""
  parts = {'unet': 'unet', 'text_encoder': 'te', 'text_encoder_2': 'te2'}
  return {
    ours: float(meta[f'{theirs}.lora_alpha'])
    for theirs, ours in parts.items()
    if meta.get(f'{theirs}.lora_alpha') is not None
  }


def adapters(tensors: dict, meta: dict | None = None) -> dict[tuple[str, str], dict]:
  """{(part, module): {'down', 'up', 'alpha'}} of a PEFT or kohya file; part is 'unet', 'te' or
  'te2'; module is the diffusers-style (dotted) or the kohya (underscored) name. An adapter
  without an alpha tensor takes the metadata's lora_alpha, else its rank (scaling 1)."""
  out: dict = {}
  unknown = []
  for key, value in tensors.items():
    key = re.sub(r'\.processor\.(to_[qkv]|to_out)_lora\.', r'.\1.lora.', key)  # attn processors
    key = key.replace('.to_out.lora.', '.to_out.0.lora.')
    m = re.match(
      r'^(unet|text_encoder|text_encoder_2)\.(.+)\.'
      r'(lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)'
      r'(?:\.default)?\.weight$',
      key,
    )
    m = m or re.match(r'^(unet|text_encoder|text_encoder_2)\.(.+)\.(alpha)$', key)
    k = re.match(r'^lora_(unet|te|te1|te2)_(.+)\.(lora_down|lora_up)\.weight$', key)
    k = k or re.match(r'^lora_(unet|te|te1|te2)_(.+)\.(alpha)$', key)
    hit = m or k
    if hit is None:
      unknown.append(key)
      continue
    part = {'text_encoder': 'te', 'te1': 'te', 'text_encoder_2': 'te2'}.get(hit[1], hit[1])
    roles = {'lora_A': 'down', 'lora_B': 'up', 'lora_down': 'down', 'lora_up': 'up'}
    roles.update({'lora.down': 'down', 'lora.up': 'up'})
    roles.update({'lora_linear_layer.down': 'down', 'lora_linear_layer.up': 'up'})
    role = roles.get(hit[3], 'alpha')
    out.setdefault((part, hit[2]), {})[role] = np.asarray(value, np.float32)
  if unknown:
    raise ConversionError(
      f'{len(unknown)} keys of the LoRA file are neither PEFT/diffusers (unet./text_encoder. '
      f'... lora_A/lora_B) nor kohya (lora_unet_/lora_te_ ... lora_down/lora_up): {unknown[:10]}'
    )
  alphas = _metadata_alphas(meta or {})
  for (part, module), a in out.items():
    if 'alpha' not in a and part in alphas:
      a['alpha'] = np.float32(alphas[part])
    if 'down' not in a or 'up' not in a:
      raise ConversionError(
        f'LoRA module {part}.{module} lacks its {"up" if "down" in a else "down"} weight'
      )
  return out


def delta(adapter: dict, scale: float) -> np.ndarray:
  """scale x alpha / rank x up @ down, in the torch layout of the layer's weight ([out, in] or
  [out, in, k, k])."""
  down, up = adapter['down'], adapter['up']
  rank = down.shape[0]
  alpha = float(np.asarray(adapter.get('alpha', rank)).reshape(-1)[0])
  w = up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)
  shape = (up.shape[0],) + down.shape[1:]
  return (scale * alpha / rank) * w.reshape(shape)


def _module_names(tree, prefix: str = '') -> dict[str, str]:
  """{module name, dotted and underscored: our torch-style module name} of a parameter tree."""
  import jax

  from ldm_jax.export.compvis import torch_tensors

  zeros = jax.tree.map(lambda a: np.zeros((1,) * np.ndim(a), np.int8), tree)
  names = {}
  for key in torch_tensors(zeros, ''):
    module = key.rsplit('.', 1)[0]
    bare = module[len(prefix) :] if module.startswith(prefix) else module
    names[bare] = names[bare.replace('.', '_')] = module
  return names


def _text_names(tree, prefix: str) -> dict[str, str]:
  """A text encoder's module names, also without ``text_model.`` (transformers >= 5 saves so)."""
  names = _module_names(tree, prefix)
  for name, module in list(names.items()):
    for head in ('text_model.', 'text_model_'):
      if name.startswith(head):
        names.setdefault(name[len(head) :], module)
  return names


class _Targets:
  """Where each adapter's module lives in our trees: UNet modules named the diffusers way go
  through the converter's renaming plan; CompVis-style and text-encoder names are ours."""

  def __init__(self, config, params):
    self.config = config
    self.unet = _module_names(params['unet'])
    self.from_diffusers: dict[str, str] = {}
    self._diffusers_index({f'model.diffusion_model.{m}.weight': 0 for m in set(self.unet.values())})
    cond = params.get('cond_stage')
    self.text: dict[str, str] = {}
    self.text2: dict[str, str] = {}  # SDXL's text_encoder_2 (OpenCLIP bigG)
    if cond is not None and config.cond_stage.kind == 'sdxl':
      names = sorted(cond)  # embedders_0 (CLIP ViT-L, the base only), then the pooled one
      if config.cond_stage.first_encoder.embed_dim:
        self.text = _text_names({names[0]: cond[names[0]]}, 'embedders.0.transformer.')
      last = len(names) - 1
      self.text2 = _text_names({names[-1]: cond[names[-1]]}, f'embedders.{last}.model.')
    elif cond is not None:
      child = next(iter(cond))  # 'transformer' (CLIP) or 'model' (OpenCLIP)
      self.text = _text_names(cond, child + '.')

  def _diffusers_index(self, compvis: dict) -> None:
    """Each diffusers module name (dotted and underscored) -> our module, one key at a time
    through the renaming plan."""
    from ldm_jax.convert.diffusers_names import unet_to_diffusers_names

    for key in compvis:
      theirs = next(iter(unet_to_diffusers_names({key: 0}, self.config.unet)))
      module = theirs.rsplit('.', 1)[0]
      ours = key[len('model.diffusion_model.') :].rsplit('.', 1)[0]
      self.from_diffusers[module] = self.from_diffusers[module.replace('.', '_')] = ours

  def find(self, part: str, module: str) -> tuple[str, str] | None:
    """(tree, our module name) of an adapter's module, or None."""
    if part == 'unet':
      ours = self.from_diffusers.get(module) or self.unet.get(module)
      return ('unet', ours) if ours else None
    if part in ('te', 'te2'):
      ours = (self.text if part == 'te' else self.text2).get(module)
      return ('cond_stage', ours) if ours else None
    return None


def merge_lora(config, params: dict, files, scales) -> tuple[dict, dict]:
  """(params with every adapter of ``files`` (paths) added at its ``scales``, a report) of numpy
  parameter trees {'unet', 'cond_stage'}."""
  import jax

  targets = _Targets(config, params)
  flat = {
    tree: {path: np.array(v, np.float32) for path, v in _leaves(params[tree])}
    for tree in ('unet', 'cond_stage')
    if params.get(tree) is not None
  }
  report = {'files': [], 'modules': 0}
  for path, scale in zip(files, scales):
    found = adapters(*read_lora(path))
    missing = [f'{p}.{m}' for (p, m) in found if targets.find(p, m) is None]
    if missing:
      raise ConversionError(
        f'{path}: {len(missing)} LoRA modules have no layer in this model: {missing[:8]}; '
        'is the file for another base model (SD 1.x / SD 2.x / SDXL)?'
      )
    for (part, module), adapter in found.items():
      tree, ours = targets.find(part, module)
      _add(flat[tree], params[tree], f'{ours}.weight', delta(adapter, scale), path)
    report['files'].append({'path': path, 'scale': scale, 'modules': len(found)})
    report['modules'] += len(found)
  out = dict(params)
  for tree, leaves in flat.items():
    out[tree] = jax.tree_util.tree_map_with_path(
      lambda p, _, leaves=leaves: leaves[jax.tree_util.keystr(p)], params[tree]
    )
  return out, report


def _leaves(tree):
  import jax

  return [(jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_leaves_with_path(tree)]


def _add(flat: dict, tree, torch_key: str, d: np.ndarray, path: str) -> None:
  """flat[leaf of torch_key] += d (in the leaf's layout), or an error naming the shapes."""
  import jax

  found = flax_leaf_for(tree, torch_key)
  if found is None:
    raise ConversionError(f'{path}: no weight {torch_key} in this model')
  leaf_path, kind = found
  key = jax.tree_util.keystr(tuple(jax.tree_util.DictKey(k) for k in leaf_path))
  if kind == 'conv' and d.ndim == 2:  # a 1x1 conv in CompVis, a Linear in diffusers
    d = d[:, :, None, None]
  value = torch_to_flax(d, kind)
  if value.shape != flat[key].shape:
    raise ConversionError(
      f'{path}: the adapter of {torch_key} gives {tuple(d.shape)}, the layer is '
      f'{tuple(flat[key].shape)} (in our layout): a LoRA for another base model'
    )
  flat[key] += value


def apply_lora(pipe, lora, lora_scale=1.0):
  """``pipe`` (an ldm_jax Pipeline) with the adapters of ``lora`` (a path, or a list) merged at
  ``lora_scale`` (a number, or one per file); scale 0 is the base model."""
  import jax

  from ldm_jax.parallel import sharding

  files = [lora] if isinstance(lora, str) else list(lora)
  scales = list(lora_scale) if isinstance(lora_scale, (list, tuple)) else [lora_scale] * len(files)
  if len(scales) != len(files):
    raise ConversionError(f'{len(files)} LoRA files but {len(scales)} scales: give one per file')
  if pipe.ldm is None:
    raise ConversionError('LoRA adapters apply to an LDM (a UNet and its text encoder)')
  params = jax.device_get(pipe.params)
  merged, report = merge_lora(pipe.config, params, files, [float(x) for x in scales])
  pipe.params = jax.device_put(merged, sharding.replicated(pipe.mesh))
  pipe.lora = report
  return pipe
