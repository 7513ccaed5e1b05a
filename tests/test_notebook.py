"""notebooks/quickstart.ipynb and stable_diffusion.ipynb run top to bottom: its code cells are executed in order, in one
fresh interpreter started at the repository root (as a kernel would run them), offline."""

import json
import os

import numpy as np
import pytest

from tests.helpers import ROOT, run_cli


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
  with open(os.path.join(ROOT, 'notebooks', 'quickstart.ipynb')) as f:
    nb = json.load(f)
  cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
  assert len(cells) >= 4
  script = tmp_path / 'notebook.py'
  script.write_text('\n\n'.join(f'# --- cell {i}\n{c}' for i, c in enumerate(cells)))
  r = run_cli(
    str(script),
    timeout=900,
    env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2', 'LDM_WORKDIR': ''},
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert '(10, 32, 32, 3) uint8' in r.stdout
  assert 'latents (10, 8, 8, 3) -> images (10, 32, 32, 3)' in r.stdout
  assert 'eps (4, 8, 8, 3)' in r.stdout


@pytest.mark.slow
def test_stable_diffusion_notebook_runs(tmp_path):
  with open(os.path.join(ROOT, 'notebooks', 'stable_diffusion.ipynb')) as f:
    nb = json.load(f)
  cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
  script = tmp_path / 'notebook.py'
  script.write_text('\n\n'.join(f'# --- cell {i}\n{c}' for i, c in enumerate(cells)))
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2', 'SD_WORKDIR': ''}
  r = run_cli(str(script), timeout=900, env={**env, 'SD_INPAINT_WORKDIR': ''})
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'text encoder: openclip 3 layers, width 32 | v prediction' in r.stdout
  assert 'text-to-image (4, 16, 16, 3) uint8' in r.stdout
  assert 'negative prompt changes the images: True' in r.stdout
  lines = [x for x in r.stdout.splitlines() if x.startswith('strength')]
  assert len(lines) == 3 and all(np.isfinite(float(x.rsplit('=', 1)[1])) for x in lines)
  assert 'inpainting (2, 16, 16, 3)' in r.stdout
  assert 'SDXL: text widths 32 + 32 -> context 64 | vector input 80' in r.stdout
  assert 'SDXL (2, 16, 16, 3) | size conditioning changes the images: True' in r.stdout


@pytest.mark.parametrize('name', ['quickstart', 'stable_diffusion'])
def test_notebooks_open_with_an_install_cell_and_their_images(name):
  """What people see on GitHub or Colab: the first code cell installs ldm_jax on a fresh runtime
  (with the accelerator's JAX), and the executed outputs, images included, are stored
  (scripts/run_notebooks.py)."""
  with open(os.path.join(ROOT, 'notebooks', f'{name}.ipynb')) as f:
    nb = json.load(f)
  code = [c for c in nb['cells'] if c['cell_type'] == 'code']
  install = ''.join(code[0]['source'])
  assert 'LDM_JAX_REPO' in install and "'[tpu]'" in install and "'[cuda12]'" in install
  assert all(c['outputs'] for c in code[1:]), 'every cell after the install has stored outputs'
  images = [o for c in code for o in c['outputs'] if 'image/png' in o.get('data', {})]
  assert images, 'no stored image'
  assert not any(o.get('name') == 'stderr' for c in code for o in c['outputs'])
