"""When a config does not fit its chips: the settings to try, in order (FSDP over all chips, full
remat, gradient accumulation), each compiled, and the first that fits."""

from __future__ import annotations

import copy
import sys

from ldm_jax.aot import report


def candidates(config, num_devices: int):
  """Settings to try, in order, when a config does not fit: (description, overrides)."""
  t = config.training
  tried = []
  fsdp = {'mesh.data': 1, 'mesh.fsdp': -1}
  tried.append(('fsdp over all chips', fsdp))
  remat = {**fsdp, 'training.remat': 'full'}
  if config.stage == 'ldm':
    tried.append(('fsdp + remat full', remat))
    for k in (2, 4, 8, 16):
      if t.batch_size % (k * num_devices) == 0:
        tried.append(
          (f'fsdp + remat full + {k} micro-batches', {**remat, 'training.grad_accum_steps': k})
        )
  elif t.batch_size > num_devices:
    # The first stage trains in float32 without remat or micro-batches: its activations shrink
    # only with fewer images per chip (a smaller global batch; lr follows with scale_lr).
    tried.append(
      (f'one image per chip (global batch {num_devices})', {'training.batch_size': num_devices})
    )
  return tried


def apply_overrides(config, overrides: dict):
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def suggest(config, topology: str, devices) -> dict | None:
  """The first candidate setting that fits, with its report (None if none does)."""
  for description, overrides in candidates(config, len(devices)):
    try:
      r = report(apply_overrides(config, overrides), topology, devices, sampling=False)
    except Exception as e:  # pylint: disable=broad-except  (e.g. a shape FSDP cannot split)
      print(
        f'# {description}: does not compile ({type(e).__name__}: {str(e)[:200]})', file=sys.stderr
      )
      continue
    used = f'{r["peak_bytes"] / 2**30:.2f} GiB per device' if 'peak_bytes' in r else 'too large'
    print(f'# {description}: {used}, fits={r["fits"]}', file=sys.stderr)
    if r['fits']:
      flags = ' '.join(f'--config.{k}={v}' for k, v in overrides.items())
      return {'settings': description, 'flags': flags, 'report': r}
  return None
