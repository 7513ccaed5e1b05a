"""The command-line flags that sample.py and ``python -m ldm_jax.eval`` share, defined once."""

from __future__ import annotations

from absl import flags

from ldm_jax.diffusion.samplers import SAMPLERS, SOLVERS
from ldm_jax.sampling.options import SPACINGS, SamplingOptions


def define_model_flags() -> None:
  """Which weights: a workdir (trained or converted) or a config (random weights)."""
  flags.DEFINE_string('workdir', None, 'Workdir of an LDM (train.py or python -m ldm_jax.convert).')
  flags.DEFINE_string(
    'config',
    None,
    'Instead of --workdir: a config file, sampled with random '
    'weights (for testing the pipeline offline).',
  )
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the newest).')
  flags.DEFINE_bool('use_ema', True, 'Sample with the EMA weights when the run has them.')


def define_sampler_flags(*, batch_size: int) -> None:
  """How to sample: sampler, steps, eta, guidance, seed, batch size (config.sampling's defaults)."""
  flags.DEFINE_enum(
    'sampler',
    None,
    sorted(SAMPLERS),
    "Sampler (default: config.sampling): the reference's ddim, plms, ddpm, or a fast solver "
    '(dpmpp_2m: 10-25 steps).',
  )
  flags.DEFINE_enum(
    'spacing',
    None,
    list(SPACINGS),
    f'Timestep spacing of the solvers ({", ".join(SOLVERS)}); default: config.sampling, '
    "else 'linspace' (diffusers' default).",
  )
  flags.DEFINE_bool('karras', None, "The solvers on Karras et al.'s noise levels (rho 7).")
  flags.DEFINE_integer(
    'steps',
    None,
    'Sampling steps for ddim/plms (the reference grid may realise more; default: config.sampling).',
  )
  flags.DEFINE_float('eta', None, 'DDIM eta (0 = deterministic; default: config.sampling).')
  flags.DEFINE_float(
    'guidance_scale',
    None,
    'Classifier-free guidance scale (1 = none; default: '
    "config.sampling where the model can be guided): the task's null condition "
    '(null class, empty prompt, empty layout) as the unconditional input.',
  )
  flags.DEFINE_float(
    'guidance_rescale',
    None,
    "Lin et al.'s guidance rescale phi (0 = off; default: config.sampling): the guided prediction "
    "pulled toward the conditional one's std, for zero-terminal-SNR models (they use 0.7).",
  )
  flags.DEFINE_integer('seed', 0, 'Random seed.')
  flags.DEFINE_integer(
    'batch_size', batch_size, 'Images per sampling call (rounded to the device count).'
  )


def sampling_options(pipe, FLAGS=flags.FLAGS) -> SamplingOptions:
  """The sampling options of the flags this program defines (``define_sampler_flags`` and
  sample.py's own), over config.sampling's: the one object the pipeline and evaluations take."""
  given = {k: FLAGS[k].value for k in SamplingOptions.fields() if k in FLAGS}
  return SamplingOptions.resolve(pipe.config, pipe.ldm.guidable, **given)
