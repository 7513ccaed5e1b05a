"""What the certificate's rows share: the tolerance, the prompts, and the comparison."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4  # float32 on the CPU, relative to the reference's largest value
PROMPTS = ('a photograph of an astronaut riding a horse', 'an oil painting of a tree, by monet', '')


def compare(name: str, ours, theirs, **extra) -> dict:
  """A row: max abs and relative error of ``ours`` against ``theirs`` (numpy, same layout)."""
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  if ours.shape != theirs.shape:
    return {'component': name, 'passed': False, 'error': f'shapes {ours.shape} vs {theirs.shape}'}
  err = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
  rel = err / max(float(np.max(np.abs(theirs))), 1e-12)
  row = {'component': name, 'max_abs': err, 'max_rel': rel, 'passed': rel <= TOLERANCE}
  return {**row, **extra}


def nchw(x):
  import torch

  return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)
