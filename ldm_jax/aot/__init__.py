"""Compile a config for a TPU pod slice on a machine without TPUs, before renting one:

  python -m ldm_jax.aot --config=configs/lsun_churches.py --topology=v5e:4x4 [--config.x=y ...]

libtpu (``pip install -e '.[aot]'``) gives the devices of a topology
(``jax.experimental.topologies``); the training step is the one train.py runs
(``train.loop.jit_train_step`` of the config's stage: mesh, FSDP rules, gradient accumulation,
remat, bf16; for autoencoders the GAN step), lowered with abstract arguments and compiled for
those chips. For LDMs the sampling loop of ``config.sampling`` is compiled too. Prints one JSON
line: per-device bytes (arguments, outputs, temporaries), whether that fits the chip's HBM
(``parallel.chips``), XLA's FLOPs, the TPU cost model's step time and the MFU it implies against
the chip's peak. All of these are XLA cost-model estimates, not measurements.

A config that does not fit says so, and (``--suggest``, on by default) the settings that do fit
are searched: FSDP over all chips, then full remat, then gradient accumulation, each compiled.

Loops count once in XLA's cost analysis, so the step's cost comes from a program without them:
with gradient accumulation k, the step at batch B/k times k; sampling, one denoising step (with
classifier-free guidance when the config uses it) times the number of steps, plus the decoder.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import numpy as np

from ldm_jax.errors import UserError

# libtpu looks for a TPU VM's metadata when it loads; there is none when compiling here.
for _name, _value in (
  ('TPU_SKIP_MDS_QUERY', '1'),
  ('TPU_ACCELERATOR_TYPE', 'v5litepod-16'),
  ('TPU_WORKER_HOSTNAMES', 'localhost'),
):
  os.environ.setdefault(_name, _value)


def _allow_several_compilers() -> None:
  """Without TPU chips here, several processes may load libtpu at once (its lockfile guards the
  chips, which a compile-only process never opens)."""
  from ldm_jax.runtime import visible_accelerators

  if not any('accel' in d or 'vfio' in d for d in visible_accelerators()):
    os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')


_allow_several_compilers()

HEADROOM = 0.95  # of HBM usable by a program (the runtime keeps some)


def topology_devices(topology: str):
  """The devices of a TPU topology such as 'v5e:4x4', 'v4:2x2x1', 'v5p:2x2x1', 'v6e:2x4', of GPUs
  ('h100:1x8', 'h200:1x8', 'a100:1x8': ldm_jax/aot/gpu.py), or 'cpu': this host's CPU devices
  (XLA_FLAGS=--xla_force_host_platform_device_count=N), to compare the CPU program with the TPU
  one."""
  import jax
  from jax.experimental import topologies

  if topology == 'cpu':
    return jax.devices('cpu')
  from ldm_jax.aot import gpu

  if gpu.parse(topology) is not None:
    return gpu.gpu_devices(topology)
  try:
    return topologies.get_topology_desc(topology_name=topology, platform='tpu').devices
  except Exception as e:  # pylint: disable=broad-except  (libtpu missing, unknown name)
    raise UserError(
      f'cannot make TPU topology {topology!r}: {type(e).__name__}: {str(e)[:300]}\n'
      "Install libtpu (pip install -e '.[aot]') and name a topology as "
      "'v5e:4x4', 'v4:2x2x1', 'v5p:2x2x1' or 'v6e:2x4'."
    ) from None


class _ShapeSource:
  """One blank example with every annotation a task reads: the data pipeline's own code then makes
  a batch whose shapes and dtypes are those of training (no dataset needed), cached latents and
  text-encoder outputs included (data.latent_cache, data.text_cache)."""

  def __init__(self, config, annotations=(), context=None):
    from ldm_jax.latent_diffusion import latent_shape

    d = config.data
    self.size, self.annotations = d.image_size, tuple(annotations)
    self.key = 'image'
    if config.stage == 'ldm' and (d.latent_cache or d.cache_latents):  # cached latents: moments
      self.key = 'moments'
      h, w, c = latent_shape(config)
      self.moments = (h, w, 2 * c if config.first_stage.kind == 'kl' else c)
    # data.text_cache: each caption's encoder output, not its tokens
    self.context = context or (config.cond_stage.max_seq_len, config.unet.context_dim)
    self.text_cache = config.stage == 'ldm' and bool(d.get('text_cache'))

  def __len__(self):
    return 1

  def load(self, index: int, flip: bool = False) -> dict:
    s = self.size
    if self.key == 'moments':
      example = {'moments': np.zeros(self.moments, np.float32), 'label': 0}
    else:
      example = {'image': np.full((s, s, 3), 127, np.uint8), 'label': 0}
    if 'caption' in self.annotations:
      example['caption'] = ['a photograph of a church']
      if self.text_cache:
        example['text_context'] = np.zeros((1, *self.context), np.float32)
    if 'boxes' in self.annotations:
      example['boxes'] = [{'class': 0, 'bbox': [0.25, 0.25, 0.5, 0.5]}]
    if 'segmentation' in self.annotations:
      example['segmentation'] = np.zeros((s, s), np.int32)
    return example


def abstract_batch(config, task, mesh, batch_size: int):
  """The training batch as ShapeDtypeStructs, sharded over the mesh."""
  import jax

  from ldm_jax.data.pipeline import Decoding, RandomAccessBatches
  from ldm_jax.parallel import sharding

  conditions = task if task is not None and task.has_condition else None
  context = task.cache_row_shape() if conditions and task.caches_text else None
  source = _ShapeSource(config, conditions.annotations if conditions else (), context)
  one = next(
    RandomAccessBatches(
      source, 1, 0, decoding=Decoding(num_threads=1, random_flip=False), conditions=conditions
    )
  )
  batch_sh = sharding.batch_sharded(mesh)
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(
      (batch_size,) + np.shape(a)[1:], np.asarray(a).dtype, sharding=batch_sh
    ),
    one,
  )


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  args, out, alias, temp = (
    m.argument_size_in_bytes,
    m.output_size_in_bytes,
    m.alias_size_in_bytes,
    m.temp_size_in_bytes,
  )
  return {
    'argument_bytes': int(args),
    'output_bytes': int(out),
    'alias_bytes': int(alias),
    'temp_bytes': int(temp),
    'code_bytes': int(m.generated_code_size_in_bytes),
    # donated (aliased) outputs reuse their arguments' memory
    'peak_bytes': int(args + out - alias + temp + m.generated_code_size_in_bytes),
  }


@dataclasses.dataclass
class Cost:
  """One device's program: XLA's FLOPs and bytes accessed, and the TPU cost model's seconds (which
  it reports as negative when it cannot cost an instruction: see ``seconds``)."""

  flops: float
  bytes: float
  xla_seconds: float

  def times(self, k: int) -> Cost:
    return Cost(self.flops * k, self.bytes * k, self.xla_seconds * k)

  def seconds(self, peak: float | None, bandwidth: float | None) -> tuple[float | None, str]:
    """(estimated seconds, 'xla' or 'roofline'): the cost model's time where it gave one, else
    the roofline max(FLOPs / peak, bytes / HBM bandwidth) of XLA's own counts."""
    if self.xla_seconds > 0:
      return self.xla_seconds, 'xla'
    if peak and bandwidth:
      return max(self.flops / peak, self.bytes / bandwidth), 'roofline'
    return None, 'none'


def _cost(compiled) -> Cost:
  """XLA's cost analysis of a compiled program (zeros and no time where it gives none: GPUs)."""
  cost = compiled.cost_analysis() or {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return Cost(
    float(cost.get('flops', 0.0)),
    float(cost.get('bytes accessed', 0.0)),
    float(cost.get('optimal_seconds', -1.0)),
  )


def _build(config, devices):
  """(mesh, stage, abstract state with shardings, abstract batch, abstract frozen input)."""
  import jax

  from ldm_jax.config import validate
  from ldm_jax.parallel import sharding
  from ldm_jax.train.loop import make_stage

  validate(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  sharding.check_batch_size(config.training.batch_size, mesh, config.training.grad_accum_steps)
  stage = make_stage(config, mesh)
  abstract = jax.eval_shape(stage.init_state, jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(abstract, mesh, config.mesh)
  state = sharding.with_shardings(abstract, state_sh)
  frozen = stage.abstract_frozen()
  frozen_sh = jax.tree.map(lambda a: a.sharding, frozen)
  batch = abstract_batch(config, getattr(stage, 'task', None), mesh, config.training.batch_size)
  return mesh, stage, state, state_sh, batch, frozen, frozen_sh


def compile_train_step(config, devices):
  """(compiled step, mesh, stage, abstract state): train.py's step for these devices."""
  from ldm_jax.nn import layers
  from ldm_jax.train.loop import jit_train_step

  mesh, stage, state, state_sh, batch, frozen, frozen_sh = _build(config, devices)
  step = jit_train_step(stage, mesh, state_sh, frozen_sh)
  with layers.lowering(devices[0].platform):  # TPU kernels, though this host is a CPU
    return step.lower(state, batch, frozen).compile(), mesh, stage, state


def step_cost(config, devices, compiled) -> Cost:
  """One training step per device; see the module doc on accumulation."""
  k = config.training.grad_accum_steps
  if k <= 1:
    return _cost(compiled)
  micro = copy.deepcopy(config)
  micro.training.batch_size //= k
  micro.training.grad_accum_steps = 1
  return _cost(compile_train_step(micro, devices)[0]).times(k)


def sampling_report(config, mesh, stage, state, peak, bandwidth) -> dict:
  """Compile the sampling loop of config.sampling (a batch of one image per device... times the
  mesh: ``mesh.size`` images) and estimate it from one denoising step and the decoder."""
  import jax
  import jax.numpy as jnp

  from ldm_jax.diffusion.samplers.guidance import guided_eps_fn
  from ldm_jax.latent_diffusion import latent_shape
  from ldm_jax.nn import layers
  from ldm_jax.parallel import sharding
  from ldm_jax.sampling.generate import make_generate_fn, training_options

  ldm = stage.ldm
  n = mesh.size
  batch_sh, repl = sharding.batch_sharded(mesh), sharding.replicated(mesh)
  params = state.ema_params if state.ema_params is not None else state.params
  frozen = stage.abstract_frozen()
  cond = abstract_batch(config, ldm.task, mesh, n).get('cond')
  options = training_options(config, ldm)
  scale = options.guidance_scale
  uncond = cond if (cond is not None and options.guided) else None
  x_T = jax.ShapeDtypeStruct((n,) + latent_shape(config), jnp.float32, sharding=batch_sh)
  sf = jax.ShapeDtypeStruct((), jnp.float32, sharding=repl)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=repl)
  generate = make_generate_fn(ldm, options)
  platform = mesh.devices.flat[0].platform
  with layers.lowering(platform, mesh):
    loop = generate.lower(params, frozen, sf, x_T, cond, uncond, key).compile()

  def one_step(params, fs, x, cond, uncond):
    c = ldm.conditioning(params, fs, cond)
    u = ldm.conditioning(params, fs, uncond) if uncond is not None else None
    t = jnp.full((x.shape[0],), 500, jnp.int32)
    return guided_eps_fn(lambda x, t, cc: ldm.eps(params, x, t, cc), c, u, scale)(x, t)

  x = jax.ShapeDtypeStruct(x_T.shape, x_T.dtype, sharding=batch_sh)
  with layers.lowering(platform, mesh):
    step = _cost(jax.jit(one_step).lower(params, frozen, x, cond, uncond).compile())
    decode = _cost(jax.jit(ldm.decode).lower(frozen, x, sf).compile())
  steps = options.record.model_calls(options.steps, ldm.schedule.num_timesteps)
  step_s, model = step.seconds(peak, bandwidth)
  decode_s, _ = decode.seconds(peak, bandwidth)
  seconds = steps * step_s + decode_s if step_s and decode_s else None
  return {
    'sampler': options.sampler,
    'steps': options.steps,
    'model_calls': steps,
    'guidance_scale': scale,
    'images': n,
    'peak_bytes': _memory(loop)['peak_bytes'],
    'flops_per_device': steps * step.flops + decode.flops,
    'est_seconds': seconds,
    'time_model': model,
    'est_images_per_second': n / seconds if seconds else None,
  }


def report(config, topology: str, devices=None, sampling: bool = True) -> dict:
  """Compile the config for the topology; the JSON report (see the module doc)."""
  from ldm_jax.parallel import chips

  devices = list(devices if devices is not None else topology_devices(topology))
  device = devices[0]
  t = config.training
  out = {
    'config': '',
    'stage': config.stage,
    'topology': topology,
    'device_kind': device.device_kind,
    'devices': len(devices),
    'mesh': {k: int(v) for k, v in sharding_sizes(config, devices).items()},
    'batch_size': int(t.batch_size),
    'grad_accum_steps': int(t.grad_accum_steps),
    'compute_dtype': t.compute_dtype,
    'remat': t.remat or 'none',
  }
  cores = getattr(device, 'num_cores', None)
  hbm = chips.hbm_bytes(device.device_kind, cores)
  try:
    compiled, mesh, stage, state = compile_train_step(config, devices)
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    # XLA refuses a program that cannot fit, after trying to rematerialise its way into HBM
    return {**out, 'hbm_bytes': hbm, 'fits': False, 'compile_error': str(e).splitlines()[0]}
  memory = _memory(compiled)
  cost = step_cost(config, devices, compiled)
  twin = None
  if device.platform == 'gpu':  # no cost analysis for GPU programs: the CPU twin's counts
    twin = report(config, 'cpu', cpu_twin(len(devices)), sampling)
    cost = Cost(twin['flops_per_device'], twin['bytes_accessed_per_device'], -1.0)
  peak = chips.peak_flops(device.device_kind, 'bfloat16', device_cores=cores)
  bandwidth = chips.hbm_bandwidth(device.device_kind, cores)
  seconds, model = cost.seconds(peak, bandwidth)
  out = {
    **out,
    **memory,
    'hbm_bytes': hbm,
    'fits': None if hbm is None else memory['peak_bytes'] <= HEADROOM * hbm,
    'flops_per_device': cost.flops,
    'bytes_accessed_per_device': cost.bytes,
    'xla_optimal_seconds': cost.xla_seconds,
    'est_step_seconds': seconds,
    'time_model': model,
    'est_images_per_second': t.batch_size / seconds if seconds else None,
    'est_mfu': cost.flops / (seconds * peak) if seconds and peak else None,
    # the compute bound: the step at the chip's peak (a lower bound on its time)
    'compute_bound_seconds': cost.flops / peak if peak else None,
    'note': 'XLA TPU cost-model estimates, not measurements',
  }
  if sampling and config.stage == 'ldm':
    out['sampling'] = sampling_report(config, mesh, stage, state, peak, bandwidth)
  return _with_twin(out, twin, peak) if twin is not None else out


def _with_twin(out: dict, twin: dict, peak) -> dict:
  """A GPU report: the memory of the GPU programs, their work counted by the CPU twin."""
  out['time_model'] = 'roofline of the CPU twin program (same sharding, as many CPU devices)'
  out['note'] = 'compiled for the GPU without one (memory); FLOPs, bytes, time: estimates'
  if 'sampling' in out:  # the loop's work at the GPU's peak
    flops = twin['sampling']['flops_per_device']
    seconds = flops / peak if peak else None
    out['sampling'].update(
      flops_per_device=flops,
      est_seconds=seconds,
      time_model='compute bound of the CPU twin FLOPs',
      est_images_per_second=out['sampling']['images'] / seconds if seconds else None,
    )
  return out


def cpu_twin(n: int) -> list:
  """``n`` CPU devices to count a GPU program's work on (python -m ldm_jax.aot sets
  XLA_FLAGS=--xla_force_host_platform_device_count for GPU topologies)."""
  import jax

  cpus = jax.devices('cpu')
  if len(cpus) < n:
    raise UserError(
      f'counting the work of {n} GPUs needs {n} CPU devices here, JAX has {len(cpus)}: set '
      f'XLA_FLAGS=--xla_force_host_platform_device_count={n}'
    )
  return cpus[:n]


def sharding_sizes(config, devices) -> dict:
  from ldm_jax.parallel import sharding

  return dict(sharding.make_mesh(config.mesh, devices).shape)
