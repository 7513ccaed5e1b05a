"""Tests run on 8 fake CPU devices (sharding is exercised everywhere) with a persistent
compilation cache shared with the subprocesses the end-to-end tests start."""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault(
  'JAX_COMPILATION_CACHE_DIR',
  os.path.join(os.path.dirname(os.path.dirname(__file__)), '.jax_cache'),
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# libtpu is installed for the AOT tests (python -m ldm_jax.aot): JAX must still run on the CPU.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


# Tests write only under their tmp dirs: a file that appears in the checkout during the run (and
# that .gitignore does not cover, as it covers runs/ and .jax_cache/) fails the session.
def _untracked() -> set:
  import subprocess

  r = subprocess.run(
    ['git', 'status', '--porcelain', '--untracked-files=all'],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  return {line[3:] for line in r.stdout.splitlines() if line.startswith('??')}


def pytest_sessionstart(session):
  if not hasattr(session.config, 'workerinput'):  # the controller (or the only process)
    session.config._untracked_before = _untracked()


def pytest_sessionfinish(session, exitstatus):
  before = getattr(session.config, '_untracked_before', None)
  if before is None:
    return
  new = sorted(_untracked() - before)
  if new:
    print(f'\nerror: the tests wrote into the checkout (write under tmp_path instead): {new}')
    session.exitstatus = 1
