"""Peak memory of ``python -m ldm_jax.convert compvis`` on a full-size checkpoint (BENCHMARKS.md
"Conversion memory"). The checkpoint is made here, with a released config's state-dict names and
shapes (``ldm_jax.export.compvis_state_dict`` of its abstract parameters) and random weights, so
nothing is downloaded; it is written tensor by tensor (one tensor in memory at a time).

  python benchmarks/convert_memory.py --config=configs/released/sd_v1.py --dir=/tmp/convmem
  python benchmarks/convert_memory.py ... --python=/path/to/other/checkout/.venv/bin/python \
      --cwd=/path/to/other/checkout   # the same file through another version of the converter

Prints one JSON line: the file's bytes and dtype, the converter's peak resident memory (the
child process's ru_maxrss, which counts JAX's own ~0.5 GB too), their ratio, and the seconds.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string('config', 'configs/released/sd_v1.py', 'The released config to imitate.')
flags.DEFINE_enum('dtype', 'float32', ['float32', 'float16'], "The file's floating dtype.")
flags.DEFINE_string('dir', '/tmp/convert_memory', 'Where the checkpoint and the workdir go.')
flags.DEFINE_string('python', sys.executable, 'The interpreter that runs the converter.')
flags.DEFINE_string('cwd', None, 'Where the converter runs (a checkout); default: this one.')
FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names_and_shapes(config) -> dict:
  """The reference state dict's names and shapes for ``config`` (no weights made); its buffers
  (the schedule) as arrays."""
  import numpy as np

  from ldm_jax.export.compvis import compvis_state_dict
  from ldm_jax.latent_diffusion import abstract_params

  params = abstract_params(config)
  first_stage = params.pop('first_stage')
  sd = compvis_state_dict(config, params, first_stage)
  return {k: v if isinstance(v, np.ndarray) else tuple(map(int, v.shape)) for k, v in sd.items()}


def write_checkpoint(path: str, shapes: dict, dtype: str) -> int:
  """A safetensors file of random tensors (arrays in ``shapes`` as they are), written one tensor at
  a time; returns its bytes."""
  import numpy as np

  itemsize = np.dtype(dtype).itemsize
  header, offset = {}, 0
  for name, shape in shapes.items():
    shape = np.shape(shape) if isinstance(shape, np.ndarray) else shape
    n = int(np.prod(shape)) * itemsize
    code = 'F32' if dtype == 'float32' else 'F16'
    header[name] = {'dtype': code, 'shape': list(shape), 'data_offsets': [offset, offset + n]}
    offset += n
  blob = json.dumps(header).encode()
  blob += b' ' * (-len(blob) % 8)
  rng = np.random.default_rng(0)
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(blob)) + blob)
    for shape in shapes.values():
      a = shape if isinstance(shape, np.ndarray) else rng.standard_normal(shape, np.float32) * 0.02
      f.write(a.astype(dtype).tobytes())
  return os.path.getsize(path)


def main(_):
  from ldm_jax.config.files import load_config_file

  os.makedirs(FLAGS.dir, exist_ok=True)
  ckpt = os.path.join(FLAGS.dir, f'model_{FLAGS.dtype}.safetensors')
  if not os.path.exists(ckpt):
    write_checkpoint(ckpt, names_and_shapes(load_config_file(FLAGS.config)), FLAGS.dtype)
  out = os.path.join(FLAGS.dir, f'workdir_{time.time_ns()}')
  cmd = [FLAGS.python, '-m', 'ldm_jax.convert', 'compvis', f'--ckpt={ckpt}']
  cmd += [f'--config={os.path.abspath(FLAGS.config)}', f'--out={out}']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  t0 = time.time()
  subprocess.run(cmd, cwd=FLAGS.cwd or ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
  seconds = time.time() - t0
  peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
  size = os.path.getsize(ckpt)
  row = dict(config=FLAGS.config, dtype=FLAGS.dtype, file_bytes=size, peak_rss_bytes=peak)
  row.update(ratio=round(peak / size, 2), seconds=round(seconds, 1), converter=FLAGS.cwd or ROOT)
  print(json.dumps(row))
  subprocess.run(['rm', '-rf', out], check=True)


if __name__ == '__main__':
  app.run(main)
