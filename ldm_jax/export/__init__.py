"""Weights out to the PyTorch tools, one module per format (as ``ldm_jax.convert`` reads them):
``compvis`` (the reference's state dict, ``.ckpt`` or ``.safetensors``) and ``diffusers`` (a
diffusers folder). The command: ``python -m ldm_jax.export`` (``__main__``)."""

from ldm_jax.export.compvis import (
  compvis_state_dict,
  export_workdir,
  jax_to_numpy,
  save_safetensors,
  save_torch,
  torch_module_path,
  torch_tensors,
)

__all__ = [
  'compvis_state_dict',
  'export_workdir',
  'jax_to_numpy',
  'save_safetensors',
  'save_torch',
  'torch_module_path',
  'torch_tensors',
]
