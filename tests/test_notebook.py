"""notebooks/quickstart.ipynb runs top to bottom: its code cells are executed in order, in one
fresh interpreter started at the repository root (as a kernel would run them), offline."""

import json
import os

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
