"""The training recipes (README "Training recipes") against their public implementations:
Min-SNR-gamma weights (diffusers' compute_snr scripts), offset noise and input perturbation
(diffusers' text-to-image script), zero terminal SNR (diffusers' rescale_zero_terminal_snr and
rescale_noise_cfg, and its Euler / DPM-Solver++ schedulers step for step), the learning-rate
schedules (optax), and a tiny run with every option that trains and resumes bitwise."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ldm_jax.diffusion.gaussian import LossSpec, diffusion_loss, min_snr_weight, snr
from ldm_jax.diffusion.schedule import TERMINAL_ABAR, make_schedule, rescale_zero_terminal_snr

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

# Stable Diffusion's schedule: diffusers' 'scaled_linear' 0.00085 -> 0.012 is the reference's 'linear'
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear')


def _sd_schedule(**kw):
  return make_schedule('linear', 1000, 0.00085, 0.012, **kw)


@pytest.mark.parametrize(
  'parameterization,prediction_type', [('eps', 'epsilon'), ('v', 'v_prediction')]
)
def test_min_snr_weights_equal_diffusers_scripts(parameterization, prediction_type):
  from diffusers.training_utils import compute_snr

  gamma = 5.0
  sched = diffusers.DDPMScheduler(**SD, prediction_type=prediction_type)
  t = np.array([0, 10, 200, 500, 999])
  theirs = compute_snr(sched, torch.from_numpy(t))
  weights = torch.stack([theirs, gamma * torch.ones_like(theirs)], dim=1).min(dim=1)[0]
  weights = weights / theirs if prediction_type == 'epsilon' else weights / (theirs + 1)
  s = _sd_schedule(parameterization=parameterization)
  np.testing.assert_allclose(np.asarray(snr(s, t)), theirs.numpy(), rtol=2e-5)
  ours = min_snr_weight(s, jnp.asarray(t), gamma, parameterization)
  np.testing.assert_allclose(np.asarray(ours), weights.numpy(), rtol=2e-5)
  # ... and the loss is the weighted mean of each example's MSE, as the scripts compute it
  rng = np.random.default_rng(0)
  out, x0, noise = (jnp.asarray(rng.normal(size=(5, 4, 4, 3)), jnp.float32) for _ in range(3))
  spec = LossSpec(parameterization=parameterization, snr_gamma=gamma)
  loss, _ = diffusion_loss(s, out, x0, noise, jnp.asarray(t), spec)
  from ldm_jax.diffusion.gaussian import velocity

  target = noise if parameterization == 'eps' else velocity(s, x0, noise, jnp.asarray(t))
  mse = np.mean((np.asarray(out) - np.asarray(target)) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(float(loss), np.mean(mse * weights.numpy()), rtol=1e-5)


def test_offset_noise_and_input_perturbation_are_diffusers_formulas():
  """noise += offset * N(0, 1)[b, c] (one value per sample and channel); the model's input is
  made from noise + perturbation * N(0, 1), the target from the noise alone."""
  from ldm_jax.train.ldm_step import example_draws, training_noise

  spec = LossSpec(noise_offset=0.1, input_perturbation=0.05)
  draws = example_draws(jax.random.PRNGKey(0), 3, (4, 4, 2), 1000, 0.0, spec)
  plain = example_draws(jax.random.PRNGKey(0), 3, (4, 4, 2), 1000, 0.0)
  for k in plain:  # the recipes add draws; the others are as without them
    np.testing.assert_array_equal(np.asarray(draws[k]), np.asarray(plain[k]))
  target_noise, input_noise = training_noise(draws, spec)
  noise, offset, perturb = (np.asarray(draws[k]) for k in ('noise', 'offset', 'perturb'))
  assert offset.shape == (3, 2) and perturb.shape == noise.shape
  want = noise + 0.1 * offset[:, None, None, :]
  np.testing.assert_allclose(np.asarray(target_noise), want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(input_noise), want + 0.05 * perturb, rtol=1e-6)


def test_zero_terminal_snr_betas_equal_diffusers_and_end_at_zero():
  from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as theirs

  s = _sd_schedule(parameterization='v', zero_terminal_snr=True)
  assert float(s.alphas_cumprod[-1]) == 0.0 and float(s.sqrt_alphas_cumprod[-1]) == 0.0
  sched = diffusers.DDIMScheduler(**SD, rescale_betas_zero_snr=True)
  # diffusers rescales in float32: its betas, ratios of abar, carry ~2e-4 of rounding; abar does not
  np.testing.assert_allclose(np.asarray(s.betas), sched.betas.numpy(), rtol=5e-4)
  np.testing.assert_allclose(
    np.asarray(s.alphas_cumprod), sched.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7
  )
  betas64 = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
  ref = theirs(torch.from_numpy(betas64)).numpy()  # in float64 both: equal to rounding
  np.testing.assert_allclose(rescale_zero_terminal_snr(betas64), ref, rtol=1e-12, atol=1e-15)
  # the first step keeps its abar; the samplers see abar_T = 2^-24, as diffusers' solvers do
  assert abs(float(s.alphas_cumprod[0]) - float(_sd_schedule().alphas_cumprod[0])) < 1e-7
  assert float(s.for_sampling().alphas_cumprod[-1]) == np.float32(TERMINAL_ABAR)
  plain = _sd_schedule()
  assert plain.for_sampling() is plain  # a schedule with a positive terminal SNR is left alone


def test_guidance_rescale_equals_rescale_noise_cfg():
  from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

  from ldm_jax.diffusion.samplers.guidance import rescale_guidance

  rng = np.random.default_rng(0)
  cfg, cond = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3)) * 0.5
  ours = rescale_guidance(jnp.asarray(cfg), jnp.asarray(cond), 0.7)
  nchw = lambda a: torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
  ref = rescale_noise_cfg(nchw(cfg), nchw(cond), guidance_rescale=0.7).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-6)


# -- ZTSNR + trailing + guidance rescale: our sampling loop against diffusers, step for step -------
W = np.random.default_rng(0).normal(size=(3, 3)) * 0.3
W2 = np.random.default_rng(1).normal(size=(3, 3)) * 0.3


def _v_np(x, t, c):
  return np.tanh(x @ W) * (1 + t / 1000.0) + 0.5 * c * np.tanh(x @ W2)


@dataclasses.dataclass(frozen=True)
class _ToyLDM:
  """What make_generate_fn reads of a LatentDiffusion, around a toy v-model: the condition is a
  [B, 1] flag (1: conditional, 0: the null condition), the first stage the identity."""

  schedule: object
  parameterization: str = 'v'

  def for_sampling(self):
    return dataclasses.replace(self, schedule=self.schedule.for_sampling())

  def conditioning(self, params, fs, cond):
    return cond

  def model_output(self, params, x, t, c):
    c = c[:, :, None, None]
    base = jnp.tanh(x @ jnp.asarray(W, jnp.float32)) * (1 + t[:, None, None, None] / 1000.0)
    return base + 0.5 * c * jnp.tanh(x @ jnp.asarray(W2, jnp.float32))

  def eps(self, params, x, t, c):
    from ldm_jax.diffusion.gaussian import model_output_to_eps

    return model_output_to_eps(self.schedule, 'v', x, t, self.model_output(params, x, t, c))

  def decode(self, fs, z, scale):
    return z


@pytest.mark.parametrize('sampler', ['euler', 'dpmpp_2m'])
def test_zero_snr_trailing_and_guidance_rescale_sample_as_diffusers(sampler):
  from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

  from ldm_jax.sampling.generate import make_generate_fn
  from ldm_jax.sampling.options import SamplingOptions

  steps, scale, phi = 10, 5.0, 0.7
  s = _sd_schedule(parameterization='v', zero_terminal_snr=True)
  options = SamplingOptions(
    sampler=sampler, steps=steps, spacing='trailing', guidance_scale=scale, guidance_rescale=phi
  )
  generate = make_generate_fn(_ToyLDM(s), options)
  x = np.random.default_rng(2).normal(size=(2, 4, 4, 3)).astype(np.float32)
  ones, zeros = jnp.ones((2, 1)), jnp.zeros((2, 1))
  ours = generate(None, None, 1.0, jnp.asarray(x), ones, zeros, jax.random.PRNGKey(0))

  cls = {
    'euler': diffusers.EulerDiscreteScheduler,
    'dpmpp_2m': diffusers.DPMSolverMultistepScheduler,
  }
  sched = cls[sampler](
    **SD, prediction_type='v_prediction', timestep_spacing='trailing', rescale_betas_zero_snr=True
  )
  # the same abar (ours: float64 betas; theirs: float32), with their 2^-24 at the end
  sched.alphas_cumprod = torch.from_numpy(np.asarray(s.for_sampling().alphas_cumprod)).float()
  sched.set_timesteps(steps)
  assert int(sched.timesteps[0]) == 999  # trailing: sampling starts from the zero-SNR step
  xt = torch.from_numpy(x * float(sched.init_noise_sigma))
  for t in sched.timesteps:
    inp = sched.scale_model_input(xt, t).numpy().astype(np.float64)
    v_c, v_u = _v_np(inp, float(t), 1.0), _v_np(inp, float(t), 0.0)
    cfg = torch.from_numpy(v_u + scale * (v_c - v_u))
    cfg = rescale_noise_cfg(cfg, torch.from_numpy(v_c), guidance_rescale=phi).float()
    xt = sched.step(cfg, t, xt).prev_sample
  ref = xt.numpy()
  err = float(np.max(np.abs(np.asarray(ours) - ref)) / np.max(np.abs(ref)))
  assert err < 1e-4, err


# -- learning-rate schedules --------------------------------------------------------------------
def _lr_config(kind, warmup=10, steps=110, end=1e-5):
  from ldm_jax.config import base_config

  c = base_config()
  c.optimizer.update(
    base_learning_rate=1e-3, warmup_steps=warmup, schedule=kind, end_learning_rate=end
  )
  c.training.num_steps = steps
  return c


@pytest.mark.parametrize('kind', ['constant', 'cosine', 'linear'])
def test_lr_schedules_warm_up_then_follow_optax(kind):
  from ldm_jax.train.state import lr_schedule

  sched = lr_schedule(_lr_config(kind))
  lrs = np.array([float(sched(jnp.asarray(i))) for i in range(0, 111)])
  np.testing.assert_allclose(lrs[:10], 1e-3 * np.arange(1, 11) / 10, rtol=1e-6)  # the warm-up
  after = {
    'constant': optax.constant_schedule(1e-3),
    'cosine': optax.cosine_decay_schedule(1e-3, 100, alpha=1e-5 / 1e-3),
    'linear': optax.linear_schedule(1e-3, 1e-5, 100),
  }[kind]
  want = [float(after(i)) for i in range(0, 101)]
  np.testing.assert_allclose(lrs[10:], want, rtol=1e-5)
  if kind != 'constant':  # the closed forms: half-way and the end
    mid = {'cosine': 1e-5 + (1e-3 - 1e-5) * 0.5, 'linear': (1e-3 + 1e-5) / 2}[kind]
    assert abs(lrs[60] - mid) < 1e-9 and abs(lrs[110] - 1e-5) < 1e-9


# -- the options on a real run --------------------------------------------------------------------
def test_bad_recipe_settings_are_config_errors():
  from ldm_jax.config import ConfigError, base_config, validate

  c = base_config()
  c.diffusion.rescale_zero_terminal_snr = True
  with pytest.raises(ConfigError, match='parameterization=v'):
    validate(c)
  c = base_config()
  c.diffusion.snr_gamma = -1.0
  with pytest.raises(ConfigError, match='snr_gamma must be >= 0'):
    validate(c)
  c = _lr_config('cosine', warmup=200, steps=100)
  with pytest.raises(ConfigError, match='raise num_steps'):
    validate(c)


def test_a_run_with_every_recipe_trains_and_resumes_bitwise(tmp_path, caplog):
  """A tiny v-prediction LDM with Min-SNR, offset noise, input perturbation, zero terminal SNR, a
  cosine schedule and aspect-ratio buckets (a folder of mixed shapes): 4 steps straight equal 2
  steps, a restart and 2 more, bit for bit; the lr logged follows the schedule; samples drawn with
  guidance rescale are finite."""
  import json

  import ldm_jax
  from ldm_jax.train.loop import train
  from tests.helpers import MIXED_BUCKETS, mixed_aspect_folder, tiny_task_config
  from tests.test_tasks import converted_workdir

  first_stage = converted_workdir('class', str(tmp_path))  # its first stage is reused

  folder = mixed_aspect_folder(tmp_path / 'mixed')

  def config():
    c = tiny_task_config('class')
    c.first_stage.checkpoint = first_stage
    c.data.update(
      source='folder',
      path=folder,
      labels_from_subdirs=True,
      buckets=MIXED_BUCKETS,
      cache_latents=False,
    )
    c.diffusion.update(
      parameterization='v',
      snr_gamma=5.0,
      noise_offset=0.1,
      input_perturbation=0.1,
      rescale_zero_terminal_snr=True,
    )
    c.optimizer.update(schedule='cosine', warmup_steps=1, end_learning_rate=0.0)
    c.sampling.update(sampler='euler', guidance_rescale=0.7)
    c.training.update(num_steps=4, checkpoint_every=2, log_every=1, sample_every=0)
    return c

  with caplog.at_level('INFO'):
    straight = train(config(), str(tmp_path / 'a'))
  # the mixed folder fills two buckets with a global batch of 8: two compiled steps
  assert '2 shapes hold a whole global batch (one compiled step each): 12x20, 16x16' in caplog.text
  c = config()
  c.training.num_steps = 2
  train(c, str(tmp_path / 'b'))
  resumed = train(config(), str(tmp_path / 'b'))
  same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), straight.params, resumed.params)
  assert all(jax.tree.leaves(same))
  rows = [json.loads(x) for x in open(tmp_path / 'a' / 'metrics.jsonl')]
  lrs = [r['lr'] for r in rows if 'lr' in r]
  # warm-up of 1 step, then cosine from 1e-3 to 0 over the 3 others: 1, 0.75, 0.25 (x 1e-3)
  np.testing.assert_allclose(lrs, [1e-3, 1e-3, 7.5e-4, 2.5e-4], rtol=1e-6)
  pipe = ldm_jax.load(str(tmp_path / 'a'))
  assert pipe.config.sampling.guidance_rescale == 0.7
  from ldm_jax.sampling.options import SamplingOptions

  assert SamplingOptions.resolve(pipe.config).spacing == 'trailing'  # zero SNR: from the last step
  images = pipe.sample(2, steps=4, class_label=1, guidance_scale=3.0, return_float=True)
  assert np.isfinite(images).all()
