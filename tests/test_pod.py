"""Training that never loses work, through train.py in fresh processes: two processes
(jax.distributed on 127.0.0.1, CPU collectives) equal one and stop together on SIGTERM; SIGKILL at random moments and relaunch
gives bitwise the parameters of an uninterrupted run; SIGTERM checkpoints the current step and
exits 0; a checkpoint written on 8 devices (FSDP) resumes on 2; a corrupt newest checkpoint is
skipped with a warning naming it. The tiny digits autoencoder keeps each launch short."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ldm_jax.checkpoint import load_raw
from tests.helpers import ROOT, TINY_AE_OVERRIDES, run_cli

pytestmark = pytest.mark.slow


def devices_env(n: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')


def args(workdir, *extra):
  return [
    'train.py',
    '--config=configs/digits_autoencoder.py',
    f'--workdir={workdir}',
    *TINY_AE_OVERRIDES,
    *extra,
  ]


def launch(workdir, *extra, devices=2, log=None):
  """train.py in the background (for signals); ``run`` waits for it."""
  return subprocess.Popen(
    [sys.executable, *args(workdir, *extra)],
    cwd=ROOT,
    env=devices_env(devices),
    stdout=subprocess.DEVNULL,
    stderr=log or subprocess.PIPE,
    text=True,
  )


def run(workdir, *extra, devices=2, timeout=600):
  r = run_cli(*args(workdir, *extra), env=devices_env(devices), timeout=timeout)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


def leaves(workdir):
  _, step, state, _ = load_raw(workdir)
  return step, jax.tree.leaves(state)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def saved_steps(workdir):
  d = os.path.join(workdir, 'checkpoints')
  return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def test_checkpoints_keep_the_newest_and_every_kth(tmp_path):
  from ldm_jax.checkpoint import Checkpointer
  from tests.helpers import tiny_autoencoder_config

  ckpt = Checkpointer(str(tmp_path), max_to_keep=2, async_save=False, keep_every=4)
  for step in range(1, 11):
    ckpt.save(
      step,
      {'w': np.full(3, step, np.float32)},
      tiny_autoencoder_config(),
      data_state={'position': 8 * step, 'global_batch': 8},
    )
  assert ckpt.all_steps() == [4, 8, 9, 10]
  assert ckpt.data_state(8) == {'position': 64, 'global_batch': 8}
  ckpt.close()


def test_distributed_start_is_explicit_or_detected(monkeypatch):
  from ldm_jax.parallel import distributed

  for var in (
    'JAX_COORDINATOR_ADDRESS',
    'JAX_NUM_PROCESSES',
    'JAX_PROCESS_ID',
    'SLURM_NTASKS',
    'SLURM_JOB_ID',
    'OMPI_COMM_WORLD_SIZE',
  ):
    monkeypatch.delenv(var, raising=False)
  assert distributed._cluster_detected() == ''
  assert distributed.initialize('auto') is False  # one process: nothing to start
  assert distributed.initialize('off', '127.0.0.1:1') is False
  with pytest.raises(ValueError, match='--num_processes=N --process_id=I'):
    distributed.initialize('auto', '127.0.0.1:1234')
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed._cluster_detected() == 'SLURM'


def launch_hosts(tmp_path, name, workdir, n, *extra):
  """``n`` processes of one job (1 CPU device each, jax.distributed on 127.0.0.1); their logs
  in tmp_path/<name>_<i>.log. Returns (processes, log paths)."""
  port = free_port()
  logs = [tmp_path / f'{name}_{i}.log' for i in range(n)]
  procs = [
    launch(
      workdir,
      *extra,
      f'--coordinator_address=127.0.0.1:{port}',
      f'--num_processes={n}',
      f'--process_id={i}',
      devices=1,
      log=open(logs[i], 'w+'),
    )
    for i in range(n)
  ]
  return procs, logs


def sigterm_at_step_3(procs, logs, which: int) -> list[str]:
  """SIGTERM process ``which`` once process 0 logged step 3; wait for all; their logs."""
  deadline = time.time() + 400
  while time.time() < deadline and 'step 3/' not in open(logs[0]).read():
    assert all(p.poll() is None for p in procs), open(logs[0]).read()[-3000:]
    time.sleep(0.2)
  procs[which].send_signal(signal.SIGTERM)
  for p in procs:
    p.wait(timeout=300)
  return [open(f).read() for f in logs]


def test_two_processes_equal_one_process_and_stop_together_on_sigterm(tmp_path):
  """Each of two processes (1 CPU device each) reads its half of every global batch. SIGTERM to
  one of them stops both at the same step (JAX's preemption sync point) with a checkpoint and
  exit code 0; the parameters equal one process on 2 devices trained for as many steps with the
  same global batch (float32, rtol 1e-5)."""
  two = str(tmp_path / 'two')
  procs, logs = launch_hosts(
    tmp_path,
    'process',
    two,
    2,
    '--config.training.num_steps=100000',
    '--config.training.checkpoint_every=1000',
  )
  outs = sigterm_at_step_3(procs, logs, 1)
  for p, err in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert 'processes=2' in outs[0] and 'jax.distributed: process 0 of 2' in outs[0]
  stops = [int(o.split('checkpoint saved at step ')[1].split()[0]) for o in outs]
  assert stops[0] == stops[1] >= 3 and saved_steps(two) == [stops[0]]
  run(
    str(tmp_path / 'one'),
    f'--config.training.num_steps={stops[0]}',
    '--config.training.checkpoint_every=1000',
  )
  step_1, one = leaves(str(tmp_path / 'one'))
  step_2, both = leaves(two)
  assert step_1 == step_2 == stops[0] and len(one) == len(both)
  for a, b in zip(one, both):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sigkill_at_random_moments_and_relaunch_is_bitwise_identical(tmp_path):
  steps = ['--config.training.num_steps=12', '--config.training.checkpoint_every=2']
  run(str(tmp_path / 'straight'), *steps)
  workdir = str(tmp_path / 'killed')
  rng = np.random.default_rng(0)
  kills = 0
  for target in sorted(rng.choice(np.arange(2, 11, 2), size=3, replace=False)):
    proc = launch(workdir, *steps, log=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if saved_steps(workdir) and saved_steps(workdir)[-1] >= target:
        time.sleep(rng.uniform(0, 0.3))  # anywhere in the next steps or an async save
        break
      time.sleep(0.05)
    if proc.poll() is not None:  # it finished first
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
  assert kills >= 2
  r = run(workdir, *steps)
  assert 'resumed from' in r.stderr
  (s1, straight), (s2, killed) = leaves(str(tmp_path / 'straight')), leaves(workdir)
  assert s1 == s2 == 12
  for a, b in zip(straight, killed):
    np.testing.assert_array_equal(a, b)


def test_sigterm_checkpoints_the_current_step_and_exits_0(tmp_path):
  workdir = str(tmp_path / 'run')
  proc = launch(
    workdir, '--config.training.num_steps=100000', '--config.training.checkpoint_every=1000'
  )
  deadline, seen = time.time() + 300, ''
  while time.time() < deadline:
    line = proc.stderr.readline()
    seen += line
    if 'step 5/' in line or not line:
      break
  proc.send_signal(signal.SIGTERM)
  _, rest = proc.communicate(timeout=300)
  seen += rest
  assert proc.returncode == 0, seen[-3000:]
  assert 'preempted (SIGTERM): checkpoint saved at step' in seen
  step = int(seen.split('checkpoint saved at step ')[1].split()[0])
  assert 5 <= step < 1000 and saved_steps(workdir) == [step]
  _, saved, state, _ = load_raw(workdir)
  assert saved == step and int(state['step']) == step
  r = run(workdir, f'--config.training.num_steps={step + 1}')
  assert f'at step {step}' in r.stderr


def test_checkpoint_from_8_fsdp_devices_resumes_on_2_and_skips_a_corrupt_newest(tmp_path):
  workdir = str(tmp_path / 'run')
  run(
    workdir,
    '--config.training.num_steps=4',
    '--config.training.checkpoint_every=2',
    '--config.mesh.data=2',
    '--config.mesh.fsdp=4',
    '--config.mesh.fsdp_min_size=64',
    devices=8,
  )
  assert saved_steps(workdir) == [2, 4]
  data_dir = os.path.join(workdir, 'checkpoints', '4', 'state')
  corrupted = 0
  for root, _, files in os.walk(data_dir):
    for f in files:
      if os.path.basename(root) == 'd':  # the array data files: cut in half
        path = os.path.join(root, f)
        with open(path, 'r+b') as fh:
          fh.truncate(os.path.getsize(path) // 2)
        corrupted += 1
  assert corrupted
  r = run(
    workdir, '--config.training.num_steps=6', '--config.training.checkpoint_every=2', devices=2
  )
  checkpoint_4 = os.path.join(workdir, 'checkpoints', '4')
  assert f'checkpoint {checkpoint_4} is unreadable' in r.stderr
  assert 'resumed from' in r.stderr and 'at step 2' in r.stderr
  assert "devices=2 (mesh {'data': 2, 'fsdp': 1})" in r.stderr
  assert os.path.isdir(os.path.join(workdir, 'corrupt_checkpoints', '4'))
  assert saved_steps(workdir)[-1] == 6
  _, step, state, _ = load_raw(workdir)
  assert step == 6 and int(state['step']) == 6


def test_four_hosts_with_fsdp_across_them_resume_on_two_and_equal_one(tmp_path):
  """A 4-host pod slice in miniature: 4 processes (1 CPU device each) with parameters, EMA and
  Adam moments sharded over all of them (FSDP across processes), SIGTERMed; the same command on
  2 processes resumes (resharding the checkpoint) and finishes; the result equals 1 process on 2
  devices trained for as many steps with the same global batch.

  Adam's eps is raised to 1e-3 here: biases before a GroupNorm (and attention key biases) have a
  zero gradient in exact arithmetic, and with eps 1e-8 Adam turns its rounding noise, which
  depends on the reduction order (FSDP's reduce-scatter vs an all-reduce), into full steps."""
  fsdp = [
    '--config.mesh.data=1',
    '--config.mesh.fsdp=-1',
    '--config.mesh.fsdp_min_size=64',
    '--config.optimizer.eps=1e-3',
  ]
  workdir = str(tmp_path / 'pod')
  procs, logs = launch_hosts(
    tmp_path,
    'host',
    workdir,
    4,
    *fsdp,
    '--config.training.num_steps=100000',
    '--config.training.checkpoint_every=1000',
  )
  outs = sigterm_at_step_3(procs, logs, 2)
  assert all(p.returncode == 0 for p in procs), outs[0][-3000:]
  assert "mesh {'data': 1, 'fsdp': 4}) processes=4" in outs[0]
  stop = int(outs[0].split('checkpoint saved at step ')[1].split()[0])
  steps = [f'--config.training.num_steps={stop + 2}', '--config.training.checkpoint_every=1000']
  procs, logs = launch_hosts(tmp_path, 'resume', workdir, 2, *fsdp, *steps)
  for p in procs:
    p.wait(timeout=400)
  out = open(logs[0]).read()
  assert all(p.returncode == 0 for p in procs), out[-3000:]
  assert f'at step {stop}' in out and "mesh {'data': 1, 'fsdp': 2}) processes=2" in out
  run(str(tmp_path / 'one'), '--config.optimizer.eps=1e-3', *steps)
  (s1, one), (s2, pod) = leaves(str(tmp_path / 'one')), leaves(workdir)
  assert s1 == s2 == stop + 2 and len(one) == len(pod)
  for a, b in zip(one, pod):  # float32 sums in another order for a few steps: within 1e-5 of
    # each array's scale (parameters ~3e-6 apart; Adam moments of gradients up to 44, 2e-4)
    scale = float(np.abs(b).max()) if np.size(b) else 0.0
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5 + 1e-5 * scale)
