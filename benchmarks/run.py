"""Speed of ldm_jax on this machine: one JSON line per measurement.

  python benchmarks/run.py                                   # churches, bf16, everything
  python benchmarks/run.py --what=train --batch_size=96 --dtype=bfloat16
  python benchmarks/run.py --what=sample --sample_steps=50,100,200 --sample_batch_size=100
  python benchmarks/run.py --compare_diffusers               # + diffusers PyTorch, same device
  python benchmarks/run.py --smoke                           # a tiny model, seconds on a CPU (CI)
  python benchmarks/run.py --profile=/tmp/prof ...           # + a trace and the top HLO ops

Measures, with random weights (speed does not depend on them):
  train        the trainer's jitted LDM step (per-example draws, NaN guard, EMA, AdamW, donated
               state) on cached latents: the UNet's forward + backward + update. img/s, step
               time, compile time, XLA's FLOP count of the step, model FLOPs (3 x the forward's)
               and MFU against the device's peak (--peak_tflops overrides the table).
  sample       DDIM (--sampler) at each of --sample_steps including the first-stage decode:
               img/s, and the model FLOPs of the UNet evaluations + decode.
  first_stage  encode and decode of --sample_batch_size images.
Memory: XLA's memory analysis of each program (arguments + outputs + temporaries) and the
device's peak so far (GPU/TPU). --compare_diffusers times diffusers' UNet2DModel + AutoencoderKL
of the same architecture (UNet FLOPs equal; head split may differ) in PyTorch on the same device
(bf16 autocast, SDPA attention; --torch_compile for torch.compile) and reports our speed-up.
--out appends the lines to a file; BENCHMARKS.md records them with date, device and command.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
import sys
import time

from absl import flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # configs/, benchmarks/
from benchmarks.common import (  # noqa: E402
  device_peak_gb,
  peak_flops,
  random_weights,
  sig,
  time_calls,
  xla_cost,
)
from ldm_jax.diffusion.samplers import SAMPLERS, model_calls  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config', os.path.join(ROOT, 'configs/lsun_churches.py'), 'LDM config to measure.'
)
flags.DEFINE_list('what', ['train', 'sample', 'first_stage'], 'Measurements to run.')
flags.DEFINE_enum(
  'dtype',
  'bfloat16',
  ['bfloat16', 'float32'],
  'Compute dtype (parameters and optimizer state stay float32).',
)
flags.DEFINE_integer('batch_size', 0, "Training global batch (0 = the config's).")
flags.DEFINE_integer('sample_batch_size', 64, 'Images per sampling / first-stage call.')
flags.DEFINE_list('sample_steps', ['50', '100', '200'], 'DDIM steps to time.')
flags.DEFINE_enum('sampler', 'ddim', sorted(set(SAMPLERS) - {'ddpm'}), 'Sampler.')
flags.DEFINE_integer('iters', 10, 'Timed iterations per training measurement (after warm-up).')
flags.DEFINE_integer('sample_iters', 3, 'Timed calls per sampling measurement.')
flags.DEFINE_float('peak_tflops', 0.0, 'Peak dense TFLOP/s of one device for MFU (0 = table).')
flags.DEFINE_bool('compare_diffusers', False, 'Also time diffusers PyTorch on the same device.')
flags.DEFINE_bool('torch_compile', False, 'diffusers comparison: torch.compile the UNet.')
flags.DEFINE_bool('smoke', False, 'A tiny model and one iteration: checks the harness (CI).')
flags.DEFINE_string('out', '', 'Append the JSON lines to this file.')
flags.DEFINE_string(
  'profile',
  '',
  'Trace extra calls of each measurement into DIR/<what>/ and print its top HLO ops '
  '(benchmarks/hlo_profile.py).',
)
flags.DEFINE_integer('profile_top', 15, 'Ops listed per traced measurement.')


def smoke_config(c):
  """The measured config shrunk to 16x16 images (f=2, 8x8 latents), the same kinds of blocks:
  compiles in seconds on a CPU."""
  c.data.image_size = 16
  c.first_stage.update(
    dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16, attn_resolutions=())
  )
  c.unet.update(dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1))
  c.unet.attention_resolutions = (1, 2)
  if c.unet.num_heads > 0:
    c.unet.num_heads = 2
  c.training.batch_size = 8
  return c


# -- measurement helpers ----------------------------------------------------------------------


def _profile(what: str, fn, compiled, calls: int = 2) -> None:
  """--profile: ``calls`` more calls of ``fn`` traced into FLAGS.profile/what, top ops printed
  (to stderr) and written to top_ops.json there. Outside the timed calls: tracing slows them."""
  if not FLAGS.profile:
    return
  import jax

  from benchmarks import hlo_profile

  directory = os.path.join(FLAGS.profile, what)
  with jax.profiler.trace(directory):
    for _ in range(calls):
      fn()
  rows = hlo_profile.save(directory, compiled, calls)
  with open(os.path.join(directory, 'top_ops.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  print(f'-- {what}: top ops per call ({directory})', file=sys.stderr)
  print(hlo_profile.format_table(rows[: FLAGS.profile_top]), file=sys.stderr)


def forward_flops(ldm, params, batch_shape, c=None) -> float:
  """XLA's FLOP count of one UNet forward (eps) on a latent batch, with the conditioning ``c``
  (ShapeDtypeStructs of ``ldm.conditioning``'s output; None for unconditional models)."""
  import jax
  import jax.numpy as jnp

  x = jax.ShapeDtypeStruct(batch_shape, jnp.float32)
  t = jax.ShapeDtypeStruct(batch_shape[:1], jnp.int32)
  compiled = jax.jit(lambda p, x, t, c: ldm.eps(p, x, t, c)).lower(params, x, t, c).compile()
  return xla_cost(compiled)['xla_flops_per_device'] or 0.0


# -- the measurements -----------------------------------------------------------------------


def bench_train(config, ldm, params, fs_params, mesh, peak):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from ldm_jax.latent_diffusion import latent_shape
  from ldm_jax.parallel import sharding
  from ldm_jax.train.ldm_step import make_ldm_step
  from ldm_jax.train.state import TrainState, make_optimizer
  from ldm_jax.train.step_common import guard_nonfinite

  b = config.training.batch_size
  tx = make_optimizer(config)
  h, w, c = latent_shape(config)
  moments_c = 2 * c if config.first_stage.kind == 'kl' else c
  rng = np.random.default_rng(0)
  batch = {'moments': rng.normal(0, 1, (b, h, w, moments_c)).astype(np.float32)}
  if config.cond_stage.kind == 'class':
    batch['label'] = np.zeros((b,), np.int32)
  state = TrainState.create(jax.tree.map(jnp.copy, params), tx, True, 1.0)
  fs_params = jax.device_put(fs_params, sharding.replicated(mesh))
  state_sh = sharding.state_shardings(jax.eval_shape(lambda: state), mesh, config.mesh)
  state = jax.device_put(state, state_sh)
  batch = jax.device_put(batch, sharding.batch_sharded(mesh))
  step = jax.jit(
    guard_nonfinite(make_ldm_step(ldm, tx, config)),
    in_shardings=(state_sh, sharding.batch_sharded(mesh), sharding.replicated(mesh)),
    out_shardings=(state_sh, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, fs_params).compile()
  compile_s = time.perf_counter() - t0
  cost = xla_cost(compiled)
  holder = {'state': state}

  def run():
    holder['state'], m = compiled(holder['state'], batch, fs_params)
    jax.block_until_ready(m)

  run()  # warm-up
  times = time_calls(run, FLAGS.iters)
  sec = statistics.median(times)
  _profile('train', run, [compiled])
  model_flops = 3 * forward_flops(ldm, params, (b, h, w, c))
  return {
    'what': 'train',
    'batch': b,
    'step_time_s': round(sec, 5),
    'images_per_s': sig(b / sec),
    'compile_s': round(compile_s, 1),
    **cost,
    'model_flops_per_step': model_flops,
    'model_tflops_per_s': round(model_flops / sec / 1e12, 3),
    'mfu': round(model_flops / sec / (peak * mesh.size), 4) if peak else None,
    'device_peak_memory_gb': device_peak_gb(),
  }


def _sample_condition(ldm, b: int, options, mesh):
  """(cond, uncond) of a sampling benchmark, split over the mesh: none for unconditional models,
  one prompt for text models, the classes in turn for class models."""
  import jax
  import numpy as np

  from ldm_jax.parallel import sharding

  task = ldm.task
  if not task.has_condition:
    return None, None
  if hasattr(task, 'tokenize'):
    cond = task.user_condition(b, prompt='a photograph of an astronaut riding a horse')[0]
  else:
    cond = task.sample_condition(b, None, 0)
  uncond = task.null_condition(cond) if options.guided else None
  put = lambda tree: (
    None
    if tree is None
    else jax.tree.map(lambda a: jax.device_put(np.asarray(a), sharding.batch_sharded(mesh)), tree)
  )
  return put(cond), put(uncond)


def bench_sample(config, ldm, params, fs_params, mesh, peak, steps: int):
  import jax
  import numpy as np

  from ldm_jax.latent_diffusion import latent_shape
  from ldm_jax.parallel import sharding
  from ldm_jax.sampling.generate import make_generate_fn
  from ldm_jax.sampling.options import SamplingOptions

  b = FLAGS.sample_batch_size
  options = SamplingOptions.resolve(config, ldm.guidable, sampler=FLAGS.sampler, steps=steps)
  options = dataclasses.replace(options, eta=0.0)
  fn = make_generate_fn(ldm, options)
  cond, uncond = _sample_condition(ldm, b, options, mesh)
  x_T = jax.device_put(
    np.random.default_rng(0).normal(size=(b,) + latent_shape(config)).astype(np.float32),
    sharding.batch_sharded(mesh),
  )
  key = jax.random.PRNGKey(0)
  scale = np.float32(1.0)
  t0 = time.perf_counter()
  compiled = fn.lower(params, fs_params, scale, x_T, cond, uncond, key).compile()
  compile_s = time.perf_counter() - t0
  cost = xla_cost(compiled)
  run = lambda: jax.block_until_ready(compiled(params, fs_params, scale, x_T, cond, uncond, key))
  run()
  sec = statistics.median(time_calls(run, FLAGS.sample_iters))
  _profile(f'sample_{FLAGS.sampler}{steps}', run, [compiled], calls=1)
  decode = (
    jax.jit(lambda p, z: ldm.decode(p, z, 1.0))
    .lower(fs_params, jax.ShapeDtypeStruct(x_T.shape, x_T.dtype))
    .compile()
  )
  evals = model_calls(FLAGS.sampler, steps, ldm.schedule.num_timesteps)
  c = None if cond is None else jax.eval_shape(ldm.conditioning, params, fs_params, cond)
  calls = 2 if uncond is not None else 1  # guidance: the UNet runs on [uncond, cond]
  model_flops = evals * calls * forward_flops(ldm, params, x_T.shape, c) + (
    xla_cost(decode)['xla_flops_per_device'] or 0
  )
  return {
    'what': f'sample_{FLAGS.sampler}{steps}',
    'batch': b,
    'guidance_scale': options.guidance_scale,
    'unet_evaluations': evals,
    'call_time_s': round(sec, 4),
    'images_per_s': sig(b / sec),
    'compile_s': round(compile_s, 1),
    'xla_memory_gb': cost['xla_memory_gb'],
    'model_flops_per_call': model_flops,
    'mfu': round(model_flops / sec / (peak * mesh.size), 4) if peak else None,
    'device_peak_memory_gb': device_peak_gb(),
  }


def bench_first_stage(config, ldm, fs_params, mesh):
  import jax
  import numpy as np

  from ldm_jax.latent_diffusion import latent_shape
  from ldm_jax.parallel import sharding

  b, size = FLAGS.sample_batch_size, config.data.image_size
  rng = np.random.default_rng(0)
  put = lambda a: jax.device_put(a.astype(np.float32), sharding.batch_sharded(mesh))
  images = put(rng.uniform(-1, 1, (b, size, size, 3)))
  latents = put(rng.normal(size=(b,) + latent_shape(config)))
  out = []
  for name, f, x in (
    ('encode', lambda p, x: ldm.encode(p, x), images),
    ('decode', lambda p, z: ldm.decode(p, z, 1.0), latents),
  ):
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(fs_params, x).compile()
    compile_s = time.perf_counter() - t0
    run = lambda compiled=compiled, x=x: jax.block_until_ready(compiled(fs_params, x))
    run()
    sec = statistics.median(time_calls(run, FLAGS.sample_iters))
    _profile(f'first_stage_{name}', run, [compiled])
    out.append(
      {
        'what': f'first_stage_{name}',
        'batch': b,
        'call_time_s': round(sec, 4),
        'images_per_s': sig(b / sec),
        'compile_s': round(compile_s, 1),
        **xla_cost(compiled),
        'device_peak_memory_gb': device_peak_gb(),
      }
    )
  return out


def _common_fields(config, params, peak) -> dict:
  """What every row of this run shares: date, device, versions, config, sizes, the command."""
  import flax
  import jax

  from ldm_jax.latent_diffusion import latent_shape
  from ldm_jax.nn.params import count_params

  device = jax.devices()[0]
  return {
    'date': datetime.date.today().isoformat(),
    'device': device.device_kind,
    'platform': device.platform,
    'num_devices': jax.device_count(),
    'jax': jax.__version__,
    'flax': flax.__version__,
    'dtype': FLAGS.dtype,
    'config': os.path.relpath(config_flags.get_config_filename(FLAGS['config']), ROOT)
    + (' (smoke: shrunk)' if FLAGS.smoke else ''),
    'image_size': config.data.image_size,
    'latent': list(latent_shape(config)),
    'peak_tflops_per_device': peak / 1e12 if peak else None,
    'unet_params': count_params(params['unet']),
    'command': ' '.join(sys.argv),
  }


def main(argv):
  del argv
  import jax

  from ldm_jax.latent_diffusion import LatentDiffusion
  from ldm_jax.parallel import sharding

  if FLAGS.compare_diffusers:  # before any work: the PyTorch peer must be installed
    from ldm_jax import optional

    for name in ('torch', 'diffusers'):
      optional.require(name, '--compare_diffusers')
  config = smoke_config(FLAGS.config) if FLAGS.smoke else FLAGS.config
  if FLAGS.smoke:
    FLAGS.iters, FLAGS.sample_iters, FLAGS.sample_batch_size = 1, 1, 8
    FLAGS.sample_steps = ['2']
  if FLAGS.batch_size:
    config.training.batch_size = FLAGS.batch_size
  config.training.compute_dtype = FLAGS.dtype
  mesh = sharding.make_mesh(config.mesh)
  ldm = LatentDiffusion.from_config(config, FLAGS.dtype, config.training.remat)
  params, fs_params = random_weights(config, ldm)
  repl = sharding.replicated(mesh)
  params, fs_params = jax.device_put(params, repl), jax.device_put(fs_params, repl)
  peak = peak_flops(jax.devices()[0].device_kind, FLAGS.dtype, FLAGS.peak_tflops)
  common = _common_fields(config, params, peak)
  results = []
  if 'train' in FLAGS.what:
    results.append(bench_train(config, ldm, params, fs_params, mesh, peak))
  if 'sample' in FLAGS.what:
    for s in FLAGS.sample_steps:
      results.append(bench_sample(config, ldm, params, fs_params, mesh, peak, int(s)))
  if 'first_stage' in FLAGS.what:
    results += bench_first_stage(config, ldm, fs_params, mesh)
  if FLAGS.compare_diffusers:
    from benchmarks import diffusers_compare

    theirs = diffusers_compare.run(config, results, FLAGS)
    for r in theirs:
      ours = next((o for o in results if o['what'] == r['what']), None)
      if ours is not None:
        ours['speedup_vs_diffusers'] = sig(ours['images_per_s'] / r['images_per_s'])
    results += theirs
  lines = [json.dumps({**common, **r}) for r in results]
  print('\n'.join(lines))
  if FLAGS.out:
    with open(FLAGS.out, 'a') as f:
      f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  from ldm_jax.runtime import run_cli

  run_cli(main)
