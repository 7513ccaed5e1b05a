"""python -m ldm_jax.verify: the certificate passes for correct conversions of a tiny diffusers SD 2
folder and a tiny CompVis SD 1 file, fails and names the component for a deliberately
mis-converted workdir (two UNet tensors swapped), and refuses another model and a machine without
diffusers with one line each."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')
pytest.importorskip('transformers')

from tests.helpers import run_cli, run_cli_without, user_error  # noqa: E402

pytestmark = pytest.mark.slow


def _verify(workdir, source, *extra):
  return run_cli('-m', 'ldm_jax.verify', f'--workdir={workdir}', f'--source={source}', *extra)


@pytest.fixture(scope='module')
def sd2_folder(tmp_path_factory):
  """A tiny diffusers StableDiffusionPipeline (SD 2: OpenCLIP-style, v) and its conversion."""
  from ldm_jax.convert.diffusers import convert_diffusers
  from tests.test_stable_diffusion import _sd_pipeline

  root = tmp_path_factory.mktemp('sd2')
  _sd_pipeline(2, root / 'pipe')
  convert_diffusers(str(root / 'pipe'), str(root / 'run'))
  return root


def test_a_correct_conversion_passes_every_component(sd2_folder):
  r = _verify(sd2_folder / 'run', sd2_folder / 'pipe')
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  report = json.loads((sd2_folder / 'run' / 'verify.json').read_text())
  rows = {row['component']: row for row in report['components']}
  assert set(rows) == {
    'tokens', 'text encoder', 'unet', 'vae encode', 'vae decode', 'trajectory', 'round trip'
  }  # fmt: skip
  assert report['passed'] and all(row['passed'] for row in rows.values())
  assert rows['tokens']['mismatches'] == 0 and rows['unet']['max_rel'] < 1e-4
  assert rows['trajectory']['psnr_db'] > 60 and rows['round trip']['tensors'] > 100
  assert 'PASSED' in r.stdout and 'unet' in r.stdout


def test_a_swapped_tensor_fails_and_names_the_unet(sd2_folder, tmp_path):
  import jax
  import ml_collections

  from ldm_jax import checkpoint as ckpt_lib
  from ldm_jax.convert.compvis import write_workdir

  saved, _, state, first_stage = ckpt_lib.load_raw(str(sd2_folder / 'run'))
  unet = jax.tree_util.tree_flatten_with_path(state['params']['unet'])
  leaves = [(p, np.asarray(v)) for p, v in unet[0]]
  # two different kernels of the same shape (an attention block's to_k and to_v, say)
  i, j = next(
    (a, b)
    for a in range(len(leaves))
    for b in range(a + 1, len(leaves))
    if leaves[a][1].ndim == 2
    and leaves[a][1].shape == leaves[b][1].shape
    and not np.array_equal(leaves[a][1], leaves[b][1])
  )
  values = [v for _, v in leaves]
  values[i], values[j] = values[j], values[i]
  swapped = jax.tree_util.tree_unflatten(unet[1], values)
  params = {**state['params'], 'unet': swapped}
  converted = dict(params=params, ema_params=None, first_stage=first_stage,
                   scale_factor=float(state['scale_factor']))  # fmt: skip
  write_workdir(str(tmp_path / 'bad'), ml_collections.ConfigDict(saved), converted)
  from ldm_jax.verify import table, verify  # in this process: the CLI is the test above's

  report = verify(str(tmp_path / 'bad'), str(sd2_folder / 'pipe'))
  failed = {row['component'] for row in report['components'] if not row['passed']}
  assert not report['passed'] and 'unet' in failed
  assert 'text encoder' not in failed and 'vae decode' not in failed
  assert failed <= {'unet', 'trajectory', 'round trip'}
  printed = table(report)
  assert 'FAILED' in printed and any(
    line.startswith('unet') and 'FAIL' in line for line in printed.splitlines()
  )


def test_a_compvis_sd1_file_passes_through_diffusers_single_file_converters(tmp_path):
  from safetensors.numpy import save_file

  from ldm_jax.convert.compvis import convert_compvis
  from tests.test_stable_diffusion import _compvis_checkpoint, _tiny_config

  sd, _, _ = _compvis_checkpoint(version=1)
  path = str(tmp_path / 'sd1.safetensors')
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
  convert_compvis(path, _tiny_config(1), str(tmp_path / 'run'))
  from ldm_jax.verify import verify

  report = verify(str(tmp_path / 'run'), path)
  assert report['passed'], report
  rows = {row['component']: row for row in report['components']}
  assert 'tokens' not in rows  # a single file has no tokenizer: ours makes the ids for both
  assert rows['round trip']['passed'] and rows['trajectory']['max_rel'] < 1e-4


def test_another_model_and_a_missing_diffusers_are_one_line(sd2_folder, tmp_path):
  from tests.test_stable_diffusion import _tiny_unet

  other = tmp_path / 'other'
  pipe = diffusers.DiffusionPipeline.from_pretrained(str(sd2_folder / 'pipe'))
  wide = diffusers.UNet2DConditionModel(**{**dict(_tiny_unet(2).config),
                                          'block_out_channels': (32, 32)})  # fmt: skip
  pipe.unet = wide
  pipe.register_modules(unet=wide)
  pipe.save_pretrained(str(other), safe_serialization=True)
  r = _verify(sd2_folder / 'run', other)
  user_error(r, 'the source is not the model of this workdir', 'block_out_channels')
  r = run_cli_without(
    ['diffusers'], '-m', 'ldm_jax.verify', f'--workdir={sd2_folder / "run"}',
    f'--source={sd2_folder / "pipe"}',
  )  # fmt: skip
  user_error(r, 'diffusers', 'pip install')


def test_an_unconditional_vq_ldm_pipeline_passes(tmp_path):
  """An LDM release's kind (diffusers' LDMPipeline: VQ first stage, UNet2DModel): its trajectory
  is unguided and decodes VQ latents unscaled, as the pipeline does."""
  from ldm_jax.convert.diffusers import convert_diffusers
  from tests.test_convert_diffusers import _ddim, _perturb, _vq, _write_pipeline

  unet = _perturb(
    diffusers.UNet2DModel(
      sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64),
      layers_per_block=2, attention_head_dim=16, norm_num_groups=32,
      down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
      up_block_types=('AttnUpBlock2D', 'UpBlock2D'),
    ),
    0,
  )  # fmt: skip
  _write_pipeline(str(tmp_path / 'pipe'), 'LDMPipeline', {'unet': unet, 'vqvae': _vq()}, _ddim())
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'run'))
  from ldm_jax.verify import verify

  report = verify(str(tmp_path / 'run'), str(tmp_path / 'pipe'))
  assert report['passed'], report
  rows = {row['component']: row for row in report['components']}
  assert set(rows) == {'unet', 'vae encode', 'vae decode', 'trajectory', 'round trip'}
  assert 'skipped' not in rows['trajectory'] and rows['trajectory']['max_rel'] < 1e-4
