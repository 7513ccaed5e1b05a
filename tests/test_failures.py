"""Faults and bad input, met where users meet them (the CLIs): each case of the README's "Failure
behaviour" table. A user mistake exits 2 with an ``error:`` line naming the problem and the fix
(no traceback); a fault loses nothing, or at most the steps since the last checkpoint."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, TINY_AE_OVERRIDES, ldm_checkpoint, run_cli, user_error

pytestmark = pytest.mark.slow
FAST = {'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}


def autoencoder(workdir, *extra):
  config = ['train.py', '--config=configs/digits_autoencoder.py', f'--workdir={workdir}']
  return config + [*TINY_AE_OVERRIDES, *extra]


def corrupt(step_dir):
  """Truncate every array file of a checkpoint step (a disk that filled up mid-write)."""
  for dirpath, _, files in os.walk(os.path.join(step_dir, 'state')):
    for f in files:
      open(os.path.join(dirpath, f), 'wb').close()


@pytest.fixture(scope='module')
def ae_run(tmp_path_factory):
  """A tiny autoencoder with checkpoints at steps 2 and 4."""
  workdir = str(tmp_path_factory.mktemp('ae') / 'run')
  r = run_cli(
    *autoencoder(workdir, '--config.training.num_steps=4', '--config.training.checkpoint_every=2'),
    env=FAST,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['2', '4']
  return workdir


def test_usage_mistakes_are_one_line_and_exit_2(tmp_path):
  line = user_error(
    run_cli('train.py', '--config=configs/nope.py', f'--workdir={tmp_path}'), 'configs/nope.py'
  )
  assert 'not found' in line
  sample = ['sample.py', '--config=configs/digits_tasks.py:unconditional']
  user_error(run_cli(*sample, '--num_samples=0'), '--num_samples=0', 'at least 1')
  user_error(run_cli(*sample, '--steps=0'), '--steps=0', 'at least 1')
  user_error(
    run_cli(*sample, '--guidance_scale=3', '--num_samples=1', '--steps=2'),
    'guidance',
    'use guidance_scale 1',
  )
  user_error(run_cli(*sample, '--steps=300', '--num_samples=1'), 'Use 250 steps or 334')
  afile = tmp_path / 'afile'
  afile.write_text('')
  user_error(
    run_cli(*sample, '--num_samples=1', f'--outdir={afile}/samples'),
    'cannot write samples to',
    'writable --outdir',
  )


def test_converter_names_a_broken_file_and_a_wrong_tensor(tmp_path):
  pytest.importorskip('torch')
  import torch

  out = str(tmp_path / 'out')
  convert = ['-m', 'ldm_jax.convert', 'compvis', '--config=configs/released/kl_f8.py']
  garbage = tmp_path / 'garbage.ckpt'
  garbage.write_bytes(os.urandom(4096))
  user_error(run_cli(*convert, f'--ckpt={garbage}', f'--out={out}'), 'not a readable')
  good = tmp_path / 'model.ckpt'
  torch.save({'state_dict': {'encoder.conv_in.weight': torch.zeros(128, 3, 3)}}, good)
  truncated = tmp_path / 'truncated.ckpt'
  truncated.write_bytes(good.read_bytes()[:200])
  user_error(run_cli(*convert, f'--ckpt={truncated}', f'--out={out}'), 'not a readable')
  r = run_cli(*convert, f'--ckpt={good}', f'--out={out}')
  user_error(r, 'does not fit this model config')
  assert 'encoder.conv_in.weight: (128, 3, 3) is a rank-3 tensor' in r.stderr


def test_unreadable_checkpoints(ae_run, tmp_path):
  """Readers fall back past an unreadable newest checkpoint (naming it); --step names it as an
  error; train.py with nothing readable left refuses to start over silently."""
  workdir = str(tmp_path / 'ae')
  shutil.copytree(ae_run, workdir)
  corrupt(os.path.join(workdir, 'checkpoints', '4'))
  code = 'import ldm_jax; p = ldm_jax.load({!r}); print("STEP", p.step)'.format(workdir)
  r = run_cli('-c', code, env=FAST)
  assert r.returncode == 0 and 'STEP 2' in r.stdout, r.stderr[-3000:]
  assert 'checkpoints/4 is unreadable' in r.stderr and '--step' in r.stderr
  r = run_cli('-m', 'ldm_jax.eval.reconstruction', f'--workdir={workdir}', '--step=4')
  user_error(r, 'checkpoints/4 is unreadable', '--step')
  # train.py: the newest is quarantined, the run resumes from step 2 ...
  r = run_cli(*autoencoder(workdir, '--config.training.num_steps=4'), env=FAST)
  assert r.returncode == 0 and 'trying the previous one (step 2)' in r.stderr, r.stderr[-3000:]
  # ... but with its only checkpoint lost it stops, now and at every relaunch, saying why
  lone = str(tmp_path / 'lone')
  os.makedirs(os.path.join(lone, 'checkpoints'))
  shutil.copytree(os.path.join(ae_run, 'checkpoints', '2'), os.path.join(lone, 'checkpoints', '2'))
  corrupt(os.path.join(lone, 'checkpoints', '2'))
  for _ in range(2):
    r = run_cli(*autoencoder(lone, '--config.training.num_steps=4'), env=FAST)
    user_error(r, 'no readable checkpoint', 'corrupt_checkpoints', 'To start over')
  assert not os.listdir(os.path.join(lone, 'checkpoints'))


def test_ldm_from_a_step_folder_and_a_latent_cache_with_unreadable_images(ae_run, tmp_path):
  """first_stage.checkpoint may name a step folder; two unreadable images at the start of a cache
  batch are skipped and counted; a folder with no readable image is the data error."""
  from ldm_jax.data import digits_uint8

  images, _ = digits_uint8(16)
  folder = tmp_path / 'imgs'
  folder.mkdir()
  (folder / '000_bad.png').write_bytes(b'not a png')
  (folder / '001_bad.jpg').write_bytes(b'\xff\xd8\xff truncated')
  for i in range(30):
    Image.fromarray(images[i]).save(folder / f'{i + 2:03d}.png')
  ldm = [
    'train.py',
    '--config=configs/digits_tasks.py:unconditional',
    f'--workdir={tmp_path / "ldm"}',
    f'--config.first_stage.checkpoint={ae_run}/checkpoints/2',
    *TINY_AE_OVERRIDES,
    '--config.unet.model_channels=32',
    '--config.unet.channel_mult=(1,2)',
    '--config.unet.attention_resolutions=(2,)',
    '--config.data.source=folder',
    f'--config.data.path={folder}',
    '--config.data.cache_latents=True',
    '--config.training.num_steps=2',
    '--config.training.eval_every=0',
  ]
  r = run_cli(*ldm, env=FAST)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'first stage: ' in r.stderr and 'step 2' in r.stderr
  assert r.stderr.count('latent cache: skipping unreadable image') == 2
  assert 'data/corrupt_images=2' in r.stderr
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'a.png').write_bytes(b'x')
  (empty / 'b.png').write_bytes(b'y')
  r = run_cli(
    *[a for a in ldm if not a.startswith(('--config.data.path', '--workdir'))],
    f'--config.data.path={empty}',
    f'--workdir={tmp_path / "ldm2"}',
    env=FAST,
  )
  user_error(r, 'none of the 2 images could be read')


def test_every_pil_mode_comes_out_as_a_viewer_shows_it_or_is_skipped_with_a_reason(tmp_path):
  from ldm_jax.data.sources import CorruptImage, FolderSource

  g16 = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535
  cases = {
    'grey16.png': (Image.fromarray(g16), np.round(g16 / 257.0)),
    'bilevel.png': (Image.new('1', (16, 16), 1), 255),
    'grey.png': (Image.new('L', (16, 16), 77), 77),
    'grey_alpha.png': (Image.new('LA', (16, 16), (0, 0)), 255),  # transparent: white
    'rgba.png': (Image.new('RGBA', (16, 16), (0, 0, 0, 0)), 255),
    'cmyk.jpg': (Image.new('CMYK', (16, 16), (0, 0, 0, 0)), 255),
  }
  pal = Image.new('P', (16, 16), 0)
  pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
  cases['palette.png'] = (pal, None)
  trans = pal.copy()
  trans.info['transparency'] = 0
  cases['palette_transparent.png'] = (trans, 255)
  rotated = np.zeros((8, 16, 3), np.uint8)
  rotated[:, :8] = 255  # left half white
  exif = Image.Image.getexif(Image.new('RGB', (1, 1)))
  exif[0x0112] = 6  # "rotate 90 clockwise to view"
  for name, (im, _) in cases.items():
    kw = {'transparency': 0} if name == 'palette_transparent.png' else {}
    im.save(tmp_path / name, **kw)
  Image.fromarray(rotated).save(tmp_path / 'exif.png', exif=exif)
  (tmp_path / 'empty.webp').write_bytes(b'')  # unreadable: skipped, with the reason
  src = FolderSource(str(tmp_path), 16)
  by_name = {os.path.basename(f): i for i, f in enumerate(src.files)}
  for name, (_, want) in cases.items():
    img = src.load(by_name[name])['image']
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8, name
    if name == 'grey16.png':
      g = img[..., 0].astype(np.float64)
      np.testing.assert_allclose(g, want, atol=1)
      assert (img == 255).mean() < 0.01  # convert('RGB') made 99% of it 255
    elif name == 'palette.png':
      assert tuple(img[0, 0]) == (10, 20, 30)
    else:
      assert np.all(img == int(want)), (name, img[0, 0])
  # 8x16, left half white; "rotate 90 clockwise" puts that half on top (16x8), cropped 8x8
  exif_img = src.load(by_name['exif.png'])['image'].astype(float)
  assert exif_img[:4].mean() > 200 and exif_img[-4:].mean() < 50
  assert abs(exif_img[:, :4].mean() - exif_img[:, -4:].mean()) < 5
  with pytest.raises(CorruptImage, match='empty.webp: cannot identify'):
    src.load(by_name['empty.webp'])


def test_a_second_job_on_a_workdir_is_refused_and_a_killed_ones_lock_is_not(tmp_path):
  workdir = str(tmp_path / 'ae')
  proc = subprocess.Popen(
    [sys.executable, *autoencoder(workdir, '--config.training.num_steps=100000')],
    cwd=ROOT,
    env=dict(os.environ, **FAST),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    seen = ''
    while 'step 3/' not in seen:
      line = proc.stderr.readline()
      assert line, seen[-3000:]
      seen += line
    r = run_cli(*autoencoder(workdir, '--config.training.num_steps=5'), env=FAST)
    user_error(r, 'in use by another training job', f'pid {proc.pid}', 'another --workdir')
  finally:
    proc.kill()  # SIGKILL: the lock stays behind
    proc.wait()
  assert os.path.exists(os.path.join(workdir, 'lock.json'))
  r = run_cli(*autoencoder(workdir, '--config.training.num_steps=5'), env=FAST)
  assert r.returncode == 0 and 'taking over the lock of a job that is gone' in r.stderr, r.stderr
  assert not os.path.exists(os.path.join(workdir, 'lock.json'))  # released at exit


def test_a_diverging_run_names_a_checkpoint_from_before_the_blow_up_and_following_it_works(
  tmp_path,
):
  """lr 1e6: the first update is finite but huge, NaN shows one step later. The message names
  (and keeps) the newest checkpoint from before that last finite update, in the log's 1-based step
  numbers; following the message (move the newer folders out, lower the learning rate) trains on
  with finite losses."""
  workdir = str(tmp_path / 'ae')
  every = ['--config.training.checkpoint_every=1', '--config.training.keep_checkpoints=1']
  r = run_cli(*autoencoder(workdir, '--config.training.num_steps=2', *every), env=FAST)
  assert r.returncode == 0, r.stderr[-3000:]
  r = run_cli(
    *autoencoder(
      workdir,
      '--config.training.num_steps=40',
      '--config.optimizer.base_learning_rate=1e6',
      '--config.training.max_nonfinite_steps=3',
      *every,
    ),
    env=FAST,
  )
  line = user_error(r, 'steps in a row', 'had NaN/Inf', '(kept)')
  first = int(line.split('(from step ')[1].split(')')[0])  # the first skipped update, 1-based
  assert f'step {first}: loss or gradients are NaN/Inf' in r.stderr  # the same numbering
  good = int(line.split('/checkpoints/')[1].split()[0])
  assert good == first - 2  # before update first - 1, the last finite (huge) one
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  assert good in steps and len(steps) == 2  # keep_checkpoints=1, plus the good one
  from ldm_jax.checkpoint import load_raw

  _, newest, state, _ = load_raw(workdir)
  data = json.loads(
    open(os.path.join(workdir, 'checkpoints', str(newest), 'data', 'metadata')).read()
  )
  assert int(state['step']) == first - 1  # state.step counts the updates applied
  assert data['skipped_steps'] == newest - (first - 1)
  # Follow the message: the newer step folders out, the default learning rate.
  for s in steps:
    if s > good:
      shutil.move(os.path.join(workdir, 'checkpoints', str(s)), str(tmp_path / f'moved_{s}'))
  r = run_cli(*autoencoder(workdir, f'--config.training.num_steps={good + 4}', *every), env=FAST)
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'at step {good}' in r.stderr and 'NaN/Inf' not in r.stderr, r.stderr[-3000:]
  _, _, state, _ = load_raw(workdir)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax_leaves(state['params']))


def jax_leaves(tree):
  import jax

  return jax.tree.leaves(tree)


def test_sample_py_writes_as_it_goes_and_continues_after_a_kill(tmp_path):
  sample = [
    'sample.py',
    '--config=configs/digits_tasks.py:unconditional',
    '--num_samples=40',
    '--batch_size=1',
    '--steps=2',
  ]
  full = tmp_path / 'full'
  assert run_cli(*sample, f'--outdir={full}', env=FAST).returncode == 0
  out = tmp_path / 'killed'
  proc = subprocess.Popen(
    [sys.executable, *sample, f'--outdir={out}'],
    cwd=ROOT,
    env=dict(os.environ, **FAST),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 300
  # Killed as soon as the first sample is on disk: the other 39 take over a second more.
  while not (out / '000000.png').exists() and time.time() < deadline and proc.poll() is None:
    time.sleep(0.01)
  proc.kill()
  proc.wait()
  kept = sorted(p.name for p in out.glob('0*.png'))
  assert '000000.png' in kept and len(kept) < 40  # written while sampling, before the end
  r = run_cli(*sample, f'--outdir={out}', env=FAST)
  assert r.returncode == 0 and 'were there from an earlier run' in r.stderr, r.stderr[-3000:]
  a, b = np.load(full / 'samples.npz')['images'], np.load(out / 'samples.npz')['images']
  np.testing.assert_array_equal(a, b)
  r = run_cli(*sample, '--seed=1', f'--outdir={out}', env=FAST)
  user_error(r, 'already holds 40 samples drawn with other settings (seed)')


def test_a_full_disk_is_one_line(tmp_path):
  """train.py on a 256 KiB tmpfs (a private mount namespace: no privileges needed where user
  namespaces are allowed): the first checkpoint does not fit."""
  if shutil.which('unshare') is None:
    pytest.skip('needs unshare (util-linux) to mount a small tmpfs')
  probe = subprocess.run(
    ['unshare', '--user', '--map-root-user', '--mount', 'true'], capture_output=True
  )
  if probe.returncode != 0:
    pytest.skip(f'user namespaces are not allowed here: {probe.stderr.decode()[:200]}')
  disk = tmp_path / 'disk'
  disk.mkdir()
  cmd = shlex.join([sys.executable, *autoencoder(f'{disk}/ae', '--config.training.num_steps=4')])
  r = subprocess.run(
    [
      'unshare',
      '--user',
      '--map-root-user',
      '--mount',
      'sh',
      '-c',
      f'mount -t tmpfs -o size=256k tmpfs {disk} && exec {cmd}',
    ],
    cwd=ROOT,
    env=dict(os.environ, **FAST),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 2, r.stderr[-3000:]
  lines = r.stderr.splitlines()
  assert any(x.startswith('error: no space left on the device') for x in lines), r.stderr
  # Not one traceback: TensorStore's callbacks that outlive Orbax's failed save are kept quiet
  # (their tracebacks, cut by the exit and interleaved with the error line, once hid it).
  assert 'os_error_code' not in r.stderr and 'Traceback' not in r.stderr, r.stderr
  assert len(lines) < 15, r.stderr


def _wandb_history(workdir):
  """({step: {key: value}}, run ids) of the offline W&B runs under WORKDIR/wandb, read from the run
  files: LevelDB's log format (a 7-byte header, then 32 KiB blocks of records [crc32, length,
  type] + data), each record a wandb Record protobuf."""
  import glob
  import json
  import struct

  from wandb.proto import wandb_internal_pb2 as pb

  history, run_ids = {}, set()
  for path in glob.glob(os.path.join(workdir, 'wandb', 'offline-run-*', 'run-*.wandb')):
    data, pos, buf = open(path, 'rb').read(), 7, b''
    while pos + 7 <= len(data):
      if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
        pos += 32768 - pos % 32768
        continue
      _, n, kind = struct.unpack('<IHB', data[pos : pos + 7])
      if n == 0 and kind == 0:
        break
      buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
      if kind in (1, 4):  # a whole record, or the last piece of one
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b''
        if record.WhichOneof('record_type') == 'run':
          run_ids.add(record.run.run_id)
        elif record.WhichOneof('record_type') == 'history':
          row = {
            i.key or '/'.join(i.nested_key): json.loads(i.value_json) for i in record.history.item
          }
          history.setdefault(row.pop('_step'), {}).update(row)
  return history, run_ids


def test_metrics_jsonl_and_a_profile_of_chosen_steps_survive_a_resume(ae_run, tmp_path):
  """WORKDIR/metrics.jsonl has one line per logged step; a resumed run drops the lines an
  interrupted run logged after its last checkpoint (and a torn last line); profile_steps traces
  those steps into WORKDIR/profile, whose top ops benchmarks/hlo_profile.py lists. With
  training.wandb set, the same scalars go to a W&B run (offline here) of the workdir's id."""
  from benchmarks import hlo_profile
  from ldm_jax.train.metric_writer import read_metrics

  workdir = str(tmp_path / 'ae')
  shutil.copytree(ae_run, workdir)
  before = [m['step'] for m in read_metrics(workdir)]
  assert before[-1] == 4
  with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
    f.write('{"step": 5, "loss": 1.0}\n{"step": 6, "lo')  # logged past step 4, then killed
  extra = [
    '--config.training.num_steps=7',
    '--config.training.log_every=1',
    '--config.training.profile_steps=6,7',
    '--config.training.peak_tflops=1',
    '--config.training.wandb=ldm-jax/tests',
  ]
  r = run_cli(*autoencoder(workdir, *extra), env={**FAST, 'WANDB_MODE': 'offline'})
  assert r.returncode == 0, r.stderr[-3000:]
  lines = read_metrics(workdir)
  assert [m['step'] for m in lines] == before + [5, 6, 7]
  assert lines[len(before)]['loss'] != 1.0 and lines[-1]['perf/mfu'] > 0 and lines[-1]['time'] > 0
  history, run_ids = _wandb_history(workdir)  # the same scalars, in the workdir's W&B run
  assert run_ids == {open(os.path.join(workdir, 'wandb_run_id')).read().strip()}
  for line in lines[len(before) :]:
    assert history[line['step']]['loss'] == pytest.approx(line['loss'], rel=1e-6)
  rows = hlo_profile.top_ops(os.path.join(workdir, 'profile'), top=5)
  assert len(rows) == 5 and all(r['ms_per_call'] > 0 for r in rows)
  assert any('step' in r['module'] for r in rows)
  line = user_error(
    run_cli(*autoencoder(workdir, '--config.training.profile_steps=9,3')), 'profile_steps'
  )
  assert "'a,b'" in line


def test_wandb_asked_for_without_the_package_says_how_to_install_it(tmp_path, monkeypatch):
  from ldm_jax.errors import UserError
  from ldm_jax.train.metric_writer import open_wandb_run

  monkeypatch.setitem(sys.modules, 'wandb', None)  # import wandb -> ImportError
  with pytest.raises(UserError, match=r"wandb='me/proj' but wandb is not installed: pip install"):
    open_wandb_run(str(tmp_path), 'me/proj', {})


AE = ['train.py', '--config=configs/digits_autoencoder.py']
LDM = ['train.py', '--config=configs/digits_ldm.py']
# (command line, what the one error line says); {tmp}: the test's folder, {ae}: a trained
# autoencoder run, {ldm}: an LDM checkpoint. None of them may start any work.
MISTAKES = {
  'int override': (AE + ['--workdir={tmp}/w', '--config.training.num_steps=abc'], 'num_steps=abc'),
  'int override 1.5': (AE + ['--workdir={tmp}/w', '--config.training.num_steps=1.5'], '1.5'),
  'int override 1e3': (AE + ['--workdir={tmp}/w', '--config.training.batch_size=1e3'], '1e3'),
  'bool override': (AE + ['--workdir={tmp}/w', '--config.training.use_ema=maybe'], 'not true'),
  'float override': (
    AE + ['--workdir={tmp}/w', '--config.optimizer.base_learning_rate=fast'],
    'base_learning_rate=fast',
  ),
  'tuple override': (
    LDM + ['--workdir={tmp}/w', '--config.unet.channel_mult=abc'],
    'expected a tuple of numbers',
  ),
  'unknown key': (AE + ['--workdir={tmp}/w', '--config.training.nokey=1'], 'nokey'),
  'unknown sampler': (['sample.py', '--workdir={ae}', '--sampler=foo'], 'should be one of'),
  'missing --workdir': (AE, '--workdir'),
  'indivisible batch': (AE + ['--workdir={tmp}/w', '--config.training.batch_size=3'], 'divisible'),
  'workdir is a file': (AE + ['--workdir={tmp}/file'], 'is a file'),
  'unwritable workdir': (AE + ['--workdir=/proc/ldm_jax_test'], 'cannot write into'),
  'sample an autoencoder': (['sample.py', '--workdir={ae}', '--outdir={tmp}/o'], 'autoencoder'),
  'export unwritable': (
    ['-m', 'ldm_jax.export', '--workdir={tmp}/none', '--out=/proc/ldm_jax_test/m.ckpt'],
    'cannot write into --out',
  ),
  'eval missing samples': (
    ['-m', 'ldm_jax.eval', '--samples={tmp}/none.npz', '--ref={tmp}'],
    'does not exist',
  ),
  'reconstruction of an LDM': (
    ['-m', 'ldm_jax.eval.reconstruction', '--workdir={ldm}', '--norfid'],
    'evaluates autoencoder runs',
  ),
}


@pytest.mark.parametrize('case', sorted(MISTAKES))
def test_every_user_mistake_is_one_error_line_and_exit_2_before_any_work(case, tmp_path, ae_run):
  argv, expected = MISTAKES[case]
  (tmp_path / 'file').write_text('')
  ldm = str(tmp_path / 'ldm')
  if '{ldm}' in ' '.join(argv):
    ldm_checkpoint(ldm)
  fill = lambda a: a.format(tmp=tmp_path, ae=ae_run, ldm=ldm)
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  r = run_cli(*map(fill, argv), env=env, timeout=300)
  line = user_error(r, expected)
  assert sum(x.startswith('error: ') for x in r.stderr.splitlines()) == 1, r.stderr[-2000:]
  assert 'FATAL' not in r.stderr and line
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'o').exists()  # nothing started
