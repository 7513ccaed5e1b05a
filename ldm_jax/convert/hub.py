"""Hugging Face hub ids (``org/name``) wherever a diffusers folder is taken.

``convert diffusers --path org/name`` and ``ldm_jax.load('org/name')`` fetch the repository's
snapshot with ``huggingface_hub.snapshot_download`` (the hub's cache: ``HF_HUB_CACHE`` /
``HF_HOME``; ``HF_HUB_OFFLINE=1`` reads only that cache; ``HF_TOKEN`` for gated models): the
configs, tokenizer and scheduler files and the safetensors weights, without the fp16/non-EMA
variants, ONNX/Flax/TF copies or single-file ``.ckpt`` duplicates; ``.bin`` weights only for a
component that has no safetensors. ``ldm_jax.load`` converts the snapshot once into
``$LDM_JAX_CACHE/hub/<org>--<name>`` (default ~/.cache/ldm_jax) and reads that workdir after
(ldm_jax/__init__.py).
"""

from __future__ import annotations

import os
import re

from ldm_jax.errors import UserError

_ID = re.compile(r'^[A-Za-z0-9][\w.-]*/[\w.-]+$')
_IGNORE = ['*.ckpt', '*.fp16.*', '*non_ema*', '*.onnx', '*.onnx_data', '*.msgpack', '*.h5', '*.ot']


def is_hub_id(path: str) -> bool:
  """An ``org/name`` that is not a local path (nor under a local folder ``org``, nor a .py)."""
  return (
    isinstance(path, str)
    and bool(_ID.match(path))
    and not path.endswith('.py')
    and not os.path.exists(path.split('/')[0])
  )


def snapshot(repo_id: str, revision: str | None = None) -> str:
  """The local folder of the repository's snapshot (downloaded or from the hub cache)."""
  try:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
  except ImportError as e:  # transformers depends on it: normally present
    raise UserError(f'{repo_id!r} looks like a hub id: pip install huggingface_hub') from e
  try:
    folder = snapshot_download(
      repo_id, revision=revision, ignore_patterns=_IGNORE + ['*.bin', '*.pt', '*.pth']
    )
    missing = [
      d
      for d in sorted(os.listdir(folder))
      if os.path.isfile(os.path.join(folder, d, 'config.json'))
      and not any(f.endswith('.safetensors') for f in os.listdir(os.path.join(folder, d)))
    ]
    if missing:  # components published as .bin only
      folder = snapshot_download(
        repo_id, revision=revision, allow_patterns=[f'{d}/*.bin' for d in missing]
      )
  except (LocalEntryNotFoundError, RepositoryNotFoundError) as e:
    offline = os.environ.get('HF_HUB_OFFLINE', '') not in ('', '0')
    raise UserError(
      f'{repo_id!r} is neither a local folder nor a hub repository '
      + ('in the hub cache (HF_HUB_OFFLINE is set)' if offline else 'that can be reached')
      + f': {type(e).__name__}. Check the id (org/name), HF_TOKEN for gated models, or give a '
      'local folder.'
    ) from e
  return folder
