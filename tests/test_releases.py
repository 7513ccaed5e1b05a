"""Released checkpoints by name: a local HTTP server (127.0.0.1) stands in for the CompVis host
through LDM_JAX_RELEASE_MIRROR; the download is cut once and resumed with a Range request,
verified, unzipped and converted."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import zipfile

import numpy as np
import pytest

from ldm_jax.convert import releases
from tests.helpers import ROOT, run_cli, user_error

torch = pytest.importorskip('torch')


class _Server(http.server.ThreadingHTTPServer):
  files: dict  # path -> bytes
  requests: list  # (path, Range header)
  cut_first: bool  # the first GET of a file stops half-way


class _Handler(http.server.BaseHTTPRequestHandler):
  def log_message(self, *args):
    pass

  def do_GET(self):  # noqa: N802
    server = self.server
    server.requests.append((self.path, self.headers.get('Range')))
    data = server.files.get(self.path)
    if data is None:
      self.send_error(404)
      return
    start = 0
    if self.headers.get('Range'):
      start = int(self.headers['Range'].split('=')[1].split('-')[0])
      self.send_response(206)
      self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
    else:
      self.send_response(200)
    self.send_header('Content-Length', str(len(data) - start))
    self.end_headers()
    body = data[start:]
    if server.cut_first:
      server.cut_first = False
      self.wfile.write(body[: len(body) // 2])
      self.wfile.flush()
      self.close_connection = True
      return
    self.wfile.write(body)


@pytest.fixture
def host():
  server = _Server(('127.0.0.1', 0), _Handler)
  server.files, server.requests, server.cut_first = {}, [], True
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield server
  server.shutdown()


def _zipped_checkpoint(config) -> bytes:
  from tests.helpers import compvis_ldm_state_dict

  sd = compvis_ldm_state_dict(config, scale_factor=0.5)
  buf = io.BytesIO()
  torch.save({'state_dict': {k: torch.from_numpy(v) for k, v in sd.items()}, 'global_step': 9}, buf)
  out = io.BytesIO()
  with zipfile.ZipFile(out, 'w') as z:
    z.writestr('lsun_churches/model.ckpt', buf.getvalue())
  return out.getvalue()


def test_convert_by_name_downloads_resumes_verifies_and_converts(host, tmp_path):
  from ldm_jax.config import load_config_file

  config = load_config_file(os.path.join(ROOT, 'configs/digits_ldm.py'))
  archive = _zipped_checkpoint(config)
  host.files['/files/latent-diffusion/lsun_churches.zip'] = archive
  env = {
    releases.MIRROR_ENV: f'http://127.0.0.1:{host.server_address[1]}',
    releases.CACHE_ENV: str(tmp_path / 'cache'),
  }
  convert = ['-m', 'ldm_jax.convert', 'compvis', '--name=lsun_churches256']
  # the digits config stands in for the churches one: a tiny random checkpoint of its shapes
  r = run_cli(*convert, '--config=configs/digits_ldm.py', f'--out={tmp_path / "run"}', env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  report = json.loads(r.stdout[r.stdout.index('{') :])
  assert report['source']['sha256'] == hashlib.sha256(archive).hexdigest()
  assert report['source']['url'].endswith('/files/latent-diffusion/lsun_churches.zip')
  ranges = [rng for path, rng in host.requests]
  assert ranges[0] is None and ranges[1] is not None and int(ranges[1][6:-1]) > 0  # resumed
  assert os.listdir(tmp_path / 'run' / 'checkpoints')
  assert not list((tmp_path / 'cache').rglob('*.part'))

  # the cached download is reused (verified again, not fetched); a wrong digest is refused
  n = len(host.requests)
  r = run_cli(*convert, '--config=configs/digits_ldm.py', f'--out={tmp_path / "again"}', env=env)
  assert r.returncode == 0 and len(host.requests) == n, r.stderr[-3000:]
  user_error(
    run_cli(*convert, '--sha256=' + '0' * 64, f'--out={tmp_path / "x"}', env=env),
    'differs from the expected',
  )
  assert not (tmp_path / 'cache' / 'lsun_churches256' / 'download.zip').exists()


def test_unknown_names_and_dead_links_are_one_line(host, tmp_path):
  env = {
    releases.MIRROR_ENV: f'http://127.0.0.1:{host.server_address[1]}',
    releases.CACHE_ENV: str(tmp_path),
  }
  line = user_error(
    run_cli('-m', 'ldm_jax.convert', 'compvis', '--name=churches', f'--out={tmp_path}/o', env=env),
    "--name='churches' is not a released CompVis model",
  )
  assert 'lsun_churches256' in line and 'cin256_v2' in line
  line = user_error(
    run_cli('-m', 'ldm_jax.convert', 'compvis', '--name=kl_f8', f'--out={tmp_path}/o', env=env),
    'HTTP 404',
  )
  assert releases.MIRROR_ENV in line and '--ckpt' in line


def test_every_release_has_its_config_and_the_mirror_keeps_the_path():
  for name, release in releases.RELEASES.items():
    assert os.path.exists(os.path.join(ROOT, release.config)), name
  url = releases.mirrored(releases.get('cin256_v2').url, 'http://m.example/x/')
  assert url == 'http://m.example/x/files/latent-diffusion/nitro/cin/model.ckpt'
  heibox = releases.mirrored(releases.get('vq_f16').url, 'http://m')
  assert heibox == 'http://m/f/0e42b04e2e904890a9b6/?dl=1'
  assert np.all([r.is_zip for r in (releases.get('kl_f8'), releases.get('vq_f16'))])
