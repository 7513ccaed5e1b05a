"""The attention paths compared by compiling them: XLA's einsum-softmax-einsum, the query-chunked
path and the Pallas TPU flash kernel, for the self-attentions of the models we ship.

  python benchmarks/attention_paths.py --topology=v5e:2x2 [--out=benchmarks/results/attention_tpu.jsonl]
  python benchmarks/attention_paths.py --topology=cpu --time   # measured on this CPU as well

For each shape and path: forward and forward+backward, XLA's memory analysis (temporaries: the
[B, heads, T, S] logits of the XLA path), its FLOP and byte counts and, on TPU topologies, the cost
model's ``optimal_seconds``. These are compiler estimates, not measurements; XLA does not cost the
inside of a Pallas kernel (a custom call), so its FLOPs and seconds for 'pallas' are left out and
only memory is compared there. ``--time`` runs each program here (CPU).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string(
  'topology', 'v5e:2x2', "TPU topology (one chip of it is used) (libtpu) or 'cpu'."
)
flags.DEFINE_list('paths', ['xla', 'chunked', 'pallas'], 'Attention paths to compile.')
flags.DEFINE_string('dtype', 'bfloat16', 'q/k/v dtype.')
flags.DEFINE_bool('time', False, 'Also time each program (only with --topology=cpu).')
flags.DEFINE_string('out', '', 'Append the JSON lines to this file.')

# (name, batch, tokens, heads, head width): the top self-attention levels of the shipped models.
SHAPES = (
  ('sd_v1_512_top', 2, 4096, 8, 40),
  ('sd_v1_512_second', 2, 1024, 8, 80),
  ('sd_v2_768_top', 2, 9216, 5, 64),
  ('churches_32x32', 8, 1024, 8, 24),
  ('cin256_16x16', 8, 256, 12, 64),
)


def _compile(fn, args, devices):
  import jax

  sharding = jax.sharding.SingleDeviceSharding(devices[0])
  abstract = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding) for a in args]
  return jax.jit(fn).lower(*abstract).compile()


def _row(compiled) -> dict:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  m = compiled.memory_analysis()
  return {
    'xla_flops': float(cost.get('flops', 0.0)),
    'xla_bytes': float(cost.get('bytes accessed', 0.0)),
    'optimal_seconds': float(cost.get('optimal_seconds', -1.0)),
    'temp_mib': round(m.temp_size_in_bytes / 2**20, 1),
  }


def _measure_ms(compiled, shape, dtype) -> float:
  """Median of 5 timed calls (CPU only: the only device here) after one warm-up call."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(0)
  args = [jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3)]
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return round(1e3 * statistics.median(times), 2)


def main(argv):
  del argv
  import datetime

  import jax
  import jax.numpy as jnp

  from ldm_jax import aot
  from ldm_jax.nn import layers

  devices = aot.topology_devices(FLAGS.topology)
  platform = devices[0].platform
  dtype = jnp.dtype(FLAGS.dtype)
  for name, b, t, heads, d in SHAPES:
    q = jax.ShapeDtypeStruct((b, t, heads, d), dtype)
    scale = d**-0.5
    for path in FLAGS.paths:
      if path == 'pallas' and platform != 'tpu':
        continue
      os.environ['LDM_JAX_ATTENTION'] = path

      def fwd(q, k, v, scale=scale):
        return layers.attention(q, k, v, scale)

      def fwd_bwd(q, k, v):
        return jax.grad(lambda q, k, v: jnp.sum(fwd(q, k, v).astype(jnp.float32) ** 2), (0, 1, 2))(
          q, k, v
        )

      for kind, fn in (('forward', fwd), ('forward_backward', fwd_bwd)):
        with layers.lowering(platform):
          try:
            compiled = _compile(fn, (q, q, q), devices)
          except Exception as e:  # pylint: disable=broad-except  (report what does not compile)
            print(f'{name} {path} {kind}: {type(e).__name__}: {str(e)[:200]}', file=sys.stderr)
            continue
        row = {
          'date': datetime.date.today().isoformat(),
          'topology': FLAGS.topology,
          'jax': jax.__version__,
          'shape': name,
          'b_t_heads_d': [b, t, heads, d],
          'dtype': FLAGS.dtype,
          'path': path,
          'kind': kind,
          **_row(compiled),
          'estimate': platform == 'tpu',
        }
        if path == 'pallas':  # the kernel is a custom call: XLA counts none of its work
          row.update(xla_flops=None, xla_bytes=None, optimal_seconds=None)
        if FLAGS.time and platform == 'cpu':
          row['measured_ms'] = _measure_ms(compiled, q.shape, dtype)
        line = json.dumps(row)
        print(line, flush=True)
        if FLAGS.out:
          with open(FLAGS.out, 'a') as f:
            f.write(line + '\n')
  os.environ.pop('LDM_JAX_ATTENTION', None)


if __name__ == '__main__':
  app.run(main)
