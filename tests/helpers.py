"""Tiny configs for tests: the demo configs shrunk to 16x16 digits (f=2, 8x8x3 latents)."""
import os
import subprocess
import sys

from configs import digits_autoencoder, digits_ldm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_FIRST_STAGE = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16)


def tiny_autoencoder_config():
  c = digits_autoencoder.get_config()
  c.data.image_size = 16
  c.first_stage.update(TINY_FIRST_STAGE)
  c.training.update(dict(batch_size=8, num_steps=4, log_every=2, checkpoint_every=2,
                         sample_every=0))
  return c


def tiny_ldm_config(first_stage_checkpoint=''):
  c = digits_ldm.get_config()
  c.data.image_size = 16
  c.first_stage.update(TINY_FIRST_STAGE)
  c.first_stage.checkpoint = first_stage_checkpoint
  c.unet.update(dict(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,)))
  c.training.update(dict(batch_size=8, num_steps=4, log_every=2, checkpoint_every=2,
                         sample_every=0, num_sample_images=8))
  c.sampling.steps = 5
  return c


def run_cli(*args, timeout=600, env=None):
  """Run a repo script (train.py, sample.py, -m ...) in a fresh interpreter; returns CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True,
                        text=True, timeout=timeout)


TINY_AE_OVERRIDES = [
    '--config.data.image_size=16', '--config.first_stage.ch=32',
    '--config.first_stage.ch_mult=(1,2)', '--config.first_stage.num_res_blocks=1',
    '--config.first_stage.resolution=16', '--config.training.batch_size=8',
    '--config.training.log_every=1', '--config.training.sample_every=0']
