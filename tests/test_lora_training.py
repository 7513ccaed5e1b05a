"""LoRA training (config.lora, configs/lora.py) on a tiny SD 1 pipeline converted from diffusers:
only the adapters train and are checkpointed, resume is bitwise, the run samples with the
adapters merged, and its adapters exported in diffusers' and kohya's naming give diffusers
(load_lora_weights) our images from the same latents."""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')
pytest.importorskip('peft')

import ldm_jax  # noqa: E402
from tests.test_convert_diffusers import TOL, _max_err  # noqa: E402
from tests.test_lora import PROMPTS, _theirs, sd1  # noqa: E402, F401  (sd1: the fixture)


def _config(base, steps):
  from ldm_jax import checkpoint as ckpt_lib

  c = ml_collections.ConfigDict(ckpt_lib.load_raw(base)[0])
  c.lora.update(dict(rank=4, alpha=8.0, targets='attn,ff'))
  c.data.update(dict(source='digits', cache_latents=False))
  c.optimizer.update(dict(base_learning_rate=1e-2, scale_lr=False))
  c.cond_stage.p_uncond = 0.1
  c.training.update(
    dict(
      init_from=base, num_steps=steps, batch_size=8, checkpoint_every=2, log_every=1,
      sample_every=0, eval_every=0, use_ema=False, compute_dtype='float32',
    )
  )  # fmt: skip
  return c


def _size(folder) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture(scope='module')
def lora_run(sd1, tmp_path_factory):  # noqa: F811  (the fixture imported above)
  """(root of the sd1 fixture, a 4-step LoRA run, a 2-step run resumed to 4 steps)."""
  from ldm_jax.train.loop import train

  root, _ = sd1
  out = tmp_path_factory.mktemp('lora_run')
  base = str(root / 'run')
  straight = train(_config(base, 4), str(out / 'a'))
  train(_config(base, 2), str(out / 'b'))
  resumed = train(_config(base, 4), str(out / 'b'))
  return root, out, straight, resumed


def test_only_adapters_train_and_a_restart_is_bitwise(lora_run):
  from ldm_jax import checkpoint as ckpt_lib

  root, out, straight, resumed = lora_run
  leaves = jax.tree_util.tree_leaves_with_path(straight.params)
  assert {jax.tree_util.keystr(p).split("'")[-2] for p, _ in leaves} == {'lora_a', 'lora_b'}
  assert any('attn2' in jax.tree_util.keystr(p) for p, _ in leaves)  # cross-attention too
  for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # B started at zero and moved: the adapters learned something
  assert max(float(np.abs(np.asarray(x)).max()) for p, x in leaves if 'lora_b' in str(p)) > 0
  # the checkpoint holds the adapters (no first stage, no base); the base is left as it was
  _, step, state, first_stage = ckpt_lib.load_raw(str(out / 'a'))
  assert step == 4 and first_stage is None and set(state['params']) == {'unet'}
  assert _size(out / 'a' / 'checkpoints' / '4') < 0.25 * _size(root / 'run' / 'checkpoints')


def test_a_lora_run_samples_with_its_adapters(lora_run):
  root, out, _, _ = lora_run
  latents = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
  kw = dict(prompt=PROMPTS, sampler='ddim', steps=4, guidance_scale=3.0, latents=latents)
  tuned = ldm_jax.load(str(out / 'a')).sample(2, return_float=True, **kw)
  base = ldm_jax.load(str(root / 'run')).sample(2, return_float=True, **kw)
  assert np.abs(tuned - base).max() > 1e-3


@pytest.mark.parametrize('fmt', ['lora-diffusers', 'lora-kohya'])
def test_exported_adapters_give_diffusers_our_images(lora_run, fmt, tmp_path):
  from tests.helpers import run_cli

  root, out, _, _ = lora_run
  path = tmp_path / 'lora.safetensors'
  r = run_cli('-m', 'ldm_jax.export', f'--workdir={out / "a"}', f'--format={fmt}', f'--out={path}')
  assert r.returncode == 0, r.stderr[-3000:]
  latents = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype(np.float32)
  want = _theirs(root, path, 1.0, latents)
  got = ldm_jax.load(str(out / 'a')).sample(
    2, prompt=PROMPTS, sampler='ddim', steps=4, guidance_scale=3.0, latents=latents,
    return_float=True,
  )  # fmt: skip
  assert _max_err(np.clip(got / 2 + 0.5, 0, 1), want) < TOL


def test_a_lora_run_exports_as_its_merged_model(lora_run, tmp_path):
  """--format=diffusers of a LoRA run writes the base with the adapters merged: diffusers'
  pipeline from that folder gives the run's images."""
  from ldm_jax.export.diffusers import export_diffusers

  _, out, _, _ = lora_run
  export_diffusers(str(out / 'a'), str(tmp_path / 'merged'))
  pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / 'merged'))
  pipe.set_progress_bar_config(disable=True)
  latents = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype(np.float32)
  from tests.test_convert_diffusers import _nchw

  with torch.no_grad():
    want = pipe(
      PROMPTS, num_inference_steps=4, guidance_scale=3.0, latents=_nchw(latents), output_type='np'
    ).images
  got = ldm_jax.load(str(out / 'a')).sample(
    2, prompt=PROMPTS, sampler='ddim', steps=4, guidance_scale=3.0, latents=latents,
    return_float=True,
  )  # fmt: skip
  assert _max_err(np.clip(got / 2 + 0.5, 0, 1), want) < TOL
