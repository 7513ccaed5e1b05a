"""The fast solvers' trajectories equal diffusers' schedulers of the same name, configured with the
reference's betas and alphas (as tests/test_schedulers_diffusers.py does for DDIM/DDPM), step for
step, driven by the same toy model and the same per-step noise: within 1e-5 of the trajectory's
scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldm_jax.diffusion.samplers.dpm_solver import dpm_solver_sample
from ldm_jax.diffusion.samplers.karras import euler_sample
from ldm_jax.diffusion.samplers.unipc import unipc_sample
from tests.test_samplers import S, eps_jax, eps_np, x_T
from tests.test_schedulers_diffusers import BETAS, _close, _reference_alphas

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')
KEY = jax.random.PRNGKey(3)


def _noises(n, shape):
  return [np.asarray(jax.random.normal(k, shape)) for k in jax.random.split(KEY, n)]


def _drive(sched, x, scale_input, noises=None, monkeypatch=None, module=None):
  """Run a diffusers scheduler on the toy model; ``noises``: per-step noise, passed as
  variance_noise or (schedulers without that argument) through their randn_tensor."""
  x = torch.from_numpy(np.asarray(x, np.float32))
  calls = iter(noises or [])
  if module is not None:
    monkeypatch.setattr(module, 'randn_tensor', lambda *a, **k: torch.from_numpy(next(calls)))
  for t in sched.timesteps:
    inp = sched.scale_model_input(x, t) if scale_input else x
    eps = eps_np(inp.numpy().astype(np.float64), float(t)).astype(np.float32)
    kw = {}
    if noises is not None and module is None:
      kw['variance_noise'] = torch.from_numpy(next(calls))
    x = sched.step(torch.from_numpy(eps), t, x, **kw).prev_sample
  return x.numpy()


@pytest.mark.parametrize(
  'order,sde,spacing,karras,steps',
  [
    (2, False, 'linspace', False, 10),
    (2, False, 'linspace', False, 20),  # >= 15 steps: no lower order at the penultimate step
    (3, False, 'linspace', False, 10),
    (3, False, 'leading', False, 20),
    (2, False, 'trailing', True, 10),
    (2, True, 'linspace', False, 10),
    (3, True, 'trailing', False, 12),
  ],
)
def test_dpm_solver_pp_matches_diffusers(order, sde, spacing, karras, steps):
  sched = _reference_alphas(
    diffusers.DPMSolverMultistepScheduler(
      solver_order=order,
      algorithm_type='sde-dpmsolver++' if sde else 'dpmsolver++',
      timestep_spacing=spacing,
      use_karras_sigmas=karras,
      steps_offset=1 if spacing == 'leading' else 0,
      **{k: v for k, v in BETAS.items() if k != 'clip_sample'},
    )
  )
  sched.set_timesteps(steps)
  x = x_T()
  ours = dpm_solver_sample(
    eps_jax, jnp.asarray(x), KEY, S, steps, order=order, sde=sde, spacing=spacing, karras=karras
  )
  ref = _drive(sched, x, False, _noises(steps, x.shape) if sde else None)
  _close(ours, ref)


@pytest.mark.parametrize(
  'name,spacing,karras,steps',
  [
    ('euler', 'linspace', False, 10),
    ('euler', 'leading', False, 25),
    ('euler', 'trailing', True, 10),
    ('heun', 'linspace', False, 10),
    ('heun', 'linspace', True, 8),
    ('heun', 'linspace', False, 3),
    ('heun', 'trailing', False, 5),
    ('euler_a', 'linspace', False, 10),
    ('euler_a', 'trailing', False, 20),
  ],
)
def test_euler_family_matches_diffusers(name, spacing, karras, steps, monkeypatch):
  cls = {
    'euler': diffusers.EulerDiscreteScheduler,
    'heun': diffusers.HeunDiscreteScheduler,
    'euler_a': diffusers.EulerAncestralDiscreteScheduler,
  }[name]
  kw = dict(timestep_spacing=spacing, steps_offset=1 if spacing == 'leading' else 0)
  if name != 'euler_a':
    kw['use_karras_sigmas'] = karras
  sched = cls(**kw, **{k: v for k, v in BETAS.items() if k != 'clip_sample'})
  sched.alphas_cumprod = torch.from_numpy(np.asarray(S.alphas_cumprod, np.float64)).float()
  sched.set_timesteps(steps)
  x = x_T()
  ours = euler_sample(
    eps_jax,
    jnp.asarray(x),
    KEY,
    S,
    steps,
    ancestral=name == 'euler_a',
    heun=name == 'heun',
    spacing=spacing,
    karras=karras,
  )
  start = x * np.sqrt(1 + float(sched.sigmas[0]) ** 2)  # the VP x_T in the sigma space
  module = None
  if name == 'euler_a':
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as module
  noises = _noises(steps, x.shape) if name == 'euler_a' else None
  ref = _drive(sched, start, True, noises, monkeypatch, module)
  _close(ours, ref)


@pytest.mark.parametrize(
  'order,spacing,karras,steps',
  [
    (2, 'linspace', False, 10),
    (3, 'linspace', False, 10),
    (2, 'leading', False, 20),
    (3, 'trailing', True, 12),
    (1, 'linspace', False, 6),
  ],
)
def test_unipc_matches_diffusers(order, spacing, karras, steps):
  sched = _reference_alphas(
    diffusers.UniPCMultistepScheduler(
      solver_order=order,
      timestep_spacing=spacing,
      use_karras_sigmas=karras,
      steps_offset=1 if spacing == 'leading' else 0,
      **{k: v for k, v in BETAS.items() if k != 'clip_sample'},
    )
  )
  sched.set_timesteps(steps)
  x = x_T()
  ours = unipc_sample(
    eps_jax, jnp.asarray(x), KEY, S, steps, order=order, spacing=spacing, karras=karras
  )
  _close(ours, _drive(sched, x, False))


def test_every_name_samples_and_the_callback_sees_each_model_call():
  """Through the Python API (random weights): each solver's images differ from DDIM's with few
  steps, and the callback is called once per model evaluation."""
  import ldm_jax
  from ldm_jax.diffusion.samplers import SOLVERS, model_calls
  from tests.helpers import tiny_task_config

  pipe = ldm_jax.load(tiny_task_config('class'))
  ddim = pipe.sample(1, steps=4, class_label=1, guidance_scale=2.0, return_float=True)
  for name in SOLVERS:
    calls = []
    out = pipe.sample(
      1,
      sampler=name,
      steps=4,
      class_label=1,
      guidance_scale=2.0,
      return_float=True,
      callback=lambda t, x, eps, calls=calls: calls.append(float(t)),
    )
    assert np.isfinite(out).all() and np.abs(out - ddim).max() > 1e-4, name
    assert len(calls) == model_calls(name, 4), (name, calls)
  # A new callback (a new lambda in a notebook) reuses the compiled loop; each sees its own run.
  before = len(pipe._fns)
  seen_a, seen_b = [], []
  for seen in (seen_a, seen_b):
    pipe.sample(1, steps=4, class_label=1, callback=lambda t, x, eps, s=seen: s.append(int(t)))
  assert len(pipe._fns) == before + 1 and len(seen_a) == len(seen_b) == model_calls('ddim', 4)


@pytest.mark.slow
def test_sample_py_with_a_solver_shows_progress_and_writes_the_grid(tmp_path):
  from tests.helpers import run_cli

  out = tmp_path / 'out'
  r = run_cli(
    'sample.py',
    '--config=configs/digits_ldm.py',
    '--sampler=dpmpp_2m',
    '--steps=10',
    '--num_samples=4',
    '--batch_size=2',
    f'--outdir={out}',
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'sampling: 4/4 img' in r.stderr and 'ETA' in r.stderr
  assert (out / 'grid.png').exists() and (out / '000003.png').exists()
  assert '(dpmpp_2m, 10 steps)' in r.stderr
  r = run_cli('sample.py', '--config=configs/digits_ldm.py', '--sampler=ddim', '--karras')
  assert r.returncode == 2 and "ddim runs the reference's grid" in r.stderr
