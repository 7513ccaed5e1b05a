"""Process setup shared by the entry points: the backend line and the warning for a CPU-only JAX
on an accelerator host; configs found after `pip install` (the packaged configs/); the path layer
(ldm_jax.storage) on local paths (its gs:// side: tests/test_gcs.py)."""

import logging
import os
import sys

import numpy as np
import pytest

from ldm_jax import config as config_lib
from ldm_jax import runtime, storage


def test_cpu_backend_on_an_accelerator_host_warns_with_the_install_command(monkeypatch, caplog):
  caplog.set_level(logging.INFO, logger='ldm_jax')
  monkeypatch.setattr(runtime, 'visible_accelerators', lambda: [])
  runtime.log_backend()
  assert 'backend cpu' in caplog.text and 'WARNING' not in caplog.text
  caplog.clear()
  monkeypatch.setattr(runtime, 'visible_accelerators', lambda: ['/dev/nvidia0'])
  runtime.log_backend()
  assert "pip install -e '.[cuda12]'" in caplog.text and '/dev/nvidia0' in caplog.text
  caplog.clear()
  monkeypatch.setattr(runtime, 'visible_accelerators', lambda: ['/dev/accel0'])
  runtime.log_backend()
  assert "pip install -e '.[tpu]'" in caplog.text


def test_configs_are_found_in_the_package_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged ones (ldm_jax/configs)
  found = config_lib.find_config('configs/digits_tasks.py:text')
  assert found == os.path.join(config_lib.PACKAGED_CONFIGS, 'digits_tasks.py') + ':text'
  assert config_lib.load_config_file('configs/released/cin256.py').unet.model_channels == 256
  with pytest.raises(config_lib.ConfigError, match="'configs/nope.py' not found"):
    config_lib.find_config('configs/nope.py')
  monkeypatch.setattr(sys, 'path', list(sys.path))
  argv = runtime.resolve_config_argv(['train.py', '--config=configs/lsun_churches.py', '--x=1'])
  assert argv[1] == '--config=' + os.path.join(config_lib.PACKAGED_CONFIGS, 'lsun_churches.py')
  assert (
    os.path.dirname(config_lib.PACKAGED_CONFIGS) in sys.path
  )  # for `from ldm_jax.configs import`


def test_local_files_are_written_whole_and_listed_in_order(tmp_path):
  path = str(tmp_path / 'a' / 'b' / 'x.json')
  storage.write_text(path, '{"a": 1}')
  assert storage.read_text(path) == '{"a": 1}' and storage.isfile(path)
  assert not [f for f in os.listdir(tmp_path / 'a' / 'b') if f.startswith('.tmp')]
  storage.append_text(str(tmp_path / 'log.jsonl'), 'one\n')
  storage.append_text(str(tmp_path / 'log.jsonl'), 'two\n')
  assert storage.read_text(str(tmp_path / 'log.jsonl')) == 'one\ntwo\n'
  storage.save_npz(str(tmp_path / 'z.npz'), images=np.arange(6).reshape(2, 3))
  np.testing.assert_array_equal(storage.load_npz(str(tmp_path / 'z.npz'))['images'][1], [3, 4, 5])
  assert [(storage.relpath(f, tmp_path), fs) for f, _, fs in storage.walk(str(tmp_path))][:2] == [
    ('.', ['log.jsonl', 'z.npz']),
    ('a', []),
  ]
  storage.rename(str(tmp_path / 'a'), str(tmp_path / 'moved' / 'a'))
  assert storage.isfile(str(tmp_path / 'moved' / 'a' / 'b' / 'x.json'))
  assert storage.resolve('gs://bucket/run') == 'gs://bucket/run'
  assert storage.resolve('run') == os.path.abspath('run')
  assert storage.relpath('gs://b/run/images/x.png', 'gs://b/run/') == 'images/x.png'
  with pytest.raises(ValueError, match='not inside'):
    storage.relpath('gs://b/other/x.png', 'gs://b/run')


def test_the_emulator_variable_points_every_client_at_it(monkeypatch):
  monkeypatch.delenv('STORAGE_EMULATOR_HOST', raising=False)
  assert storage.emulator_environment() == {}
  monkeypatch.setenv('STORAGE_EMULATOR_HOST', '127.0.0.1:4443')
  env = storage.emulator_environment()
  assert env['TENSORSTORE_GCS_HTTP_URL'] == 'http://127.0.0.1:4443'
  assert env['GOOGLE_AUTH_TOKEN_FOR_TESTING']


def test_gs_paths_use_gcsfs_whatever_was_imported_first():
  """etils picks TensorFlow's GCS client when TensorFlow is installed and caches the choice at the
  first path of the process; ldm_jax makes it gcsfs (the client the emulator tests run) always."""
  import tensorflow  # noqa: F401  (installed for TFDS: the case that used to choose TF's client)
  from etils.epath import backend

  storage.exists(os.getcwd())  # a local path first, as in a process that trained before
  assert storage.Path('gs://bucket/run')._backend is backend.fsspec_backend
