"""Process setup shared by the command-line tools: logging, JAX compilation cache, and turning
config-flag parsing errors into one clear line."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading

SIGTERM = threading.Event()
# Set while a training job starts up (imports, restore, data, compile, the first step): SIGTERM
# then ends the process within a second, as there is nothing to save yet. Cleared by the loop.
STARTING = threading.Event()
STARTING_PHASE = ['imports']  # what the job is doing, for the exit line
_AT_EARLY_EXIT: list = []  # callables run before such an exit (the workdir lock's release)


def on_sigterm(signum, frame):  # pylint: disable=unused-argument
  SIGTERM.set()


def at_early_exit(fn) -> None:
  _AT_EARLY_EXIT.append(fn)


def forget_early_exit(fn) -> None:
  if fn in _AT_EARLY_EXIT:
    _AT_EARLY_EXIT.remove(fn)


def starting(phase: str) -> None:
  """Say what the starting job does now (named if SIGTERM ends it)."""
  STARTING_PHASE[0] = phase


def exit_now(code: int, line: str) -> None:
  """Print ``line``, run the at_early_exit callables and leave at once (os._exit: the main thread
  may be inside a compile or a blocked write, which no exception would interrupt)."""
  try:
    sys.stderr.flush()
    os.write(2, (line.rstrip('\n') + '\n').encode())

    def run_callbacks():
      for fn in list(_AT_EARLY_EXIT):
        try:
          fn()
        except Exception:  # noqa: BLE001 - leaving anyway
          pass

    helper = threading.Thread(target=run_callbacks, daemon=True)
    helper.start()
    helper.join(5.0)  # a stalled storage may hang them too: leave regardless
  finally:
    os._exit(code)


def _watch_signals(fd: int) -> None:
  """Python runs a signal handler only when the main thread returns to the interpreter, which a
  compile or a restore may not do for minutes; its C handler writes the signal number to the
  wakeup fd at once, and this thread acts on it."""
  while True:
    try:
      data = os.read(fd, 64)
    except OSError:
      return
    if not data:
      return
    if signal.SIGTERM in data:
      SIGTERM.set()
      if STARTING.is_set():
        exit_now(
          0,
          f'preempted (SIGTERM) while starting ({STARTING_PHASE[0]}): nothing to save yet; run '
          'the same command again to resume',
        )


def catch_sigterm():
  """From now on SIGTERM sets a flag instead of killing the process (the training loop then saves
  and exits 0), and while the job starts up (STARTING: imports, restore, compile, the first step)
  it ends the process within a second with exit 0. train.py calls it first thing. Returns the
  previous handler (None: not the main thread, e.g. a notebook's worker, where no handler can be
  installed)."""
  try:
    previous = signal.signal(signal.SIGTERM, on_sigterm)
  except ValueError:
    return None
  old = signal.set_wakeup_fd(-1)
  if old != -1:  # someone else's (asyncio's, or ours from an earlier call): keep it
    signal.set_wakeup_fd(old)
    return previous
  r, w = os.pipe()
  os.set_blocking(w, False)
  signal.set_wakeup_fd(w, warn_on_full_buffer=False)
  threading.Thread(target=_watch_signals, args=(r,), daemon=True, name='ldm_jax-signals').start()
  return previous


DISK_FULL = (
  'no space left on the device{where}: free some space (or use a --workdir/--outdir on another '
  'disk) and run the same command again; a training run resumes from its last complete checkpoint'
)


def _is_disk_full(text: str) -> bool:
  return 'No space left on device' in text or "os_error_code='28'" in text


def _exit_disk_full(where: str = '') -> None:
  """Print the one line and leave now: the threads still writing (Orbax's, TensorStore's) would
  each print their own traceback of the same full disk."""
  sys.stderr.flush()
  os.write(2, ('\nerror: ' + DISK_FULL.format(where=where) + '\n').encode())
  os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # nothing after the line
  os._exit(2)


class _DiskFullFilter(logging.Filter):
  """On the first error log record about a full disk (Orbax logs its background save's failure
  with a traceback, before the main thread hears of it): the one line, exit 2."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      import traceback

      text = record.getMessage()
      if record.exc_info:
        text += ''.join(traceback.format_exception(*record.exc_info))
      if _is_disk_full(text):
        _exit_disk_full()
    return True


def _disk_full_excepthook(previous):
  def hook(args):
    if _is_disk_full(f'{args.exc_type.__name__}: {args.exc_value}'):
      _exit_disk_full()
    previous(args)

  return hook


def progress(batches, total: int, desc: str, unit: str = 'img', every_s: float = 30.0, size=len):
  """Yield ``batches`` (of ``size(batch)`` items each) while showing progress toward ``total``
  items: a bar with rate and ETA on a terminal, else a log line every ``every_s`` seconds and at
  the end (as training does)."""
  import time

  from tqdm import tqdm

  log = logging.getLogger('ldm_jax')
  tty = sys.stderr.isatty()
  bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=not tty)
  done, t0, last = 0, time.time(), time.time()
  try:
    for batch in batches:
      yield batch
      done += size(batch)
      bar.update(size(batch))
      now = time.time()
      if not tty and (now - last >= every_s or done >= total):
        rate = done / max(now - t0, 1e-9)
        eta = (total - done) / max(rate, 1e-9)
        log.info('%s: %d/%d %s (%.3g %s/s, ETA %ds)', desc, done, total, unit, rate, unit, eta)
        last = now
  finally:
    bar.close()


def setup_runtime() -> None:
  logging.basicConfig(
    level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', force=True
  )
  for handler in logging.getLogger().handlers:
    handler.addFilter(_DiskFullFilter())
  threading.excepthook = _disk_full_excepthook(threading.excepthook)
  for noisy in ('absl', 'jax._src', 'orbax', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # gcsfs and google-auth warn on every bucket when no credentials are set up (an emulator).
  for noisy in ('gcsfs', 'google.auth'):
    logging.getLogger(noisy).setLevel(logging.ERROR)
  import jax

  cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', os.path.expanduser('~/.cache/ldm_jax/xla'))
  jax.config.update('jax_compilation_cache_dir', cache)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)


def visible_accelerators() -> list[str]:
  """Device files of accelerators this machine has, whatever JAX was installed with: NVIDIA GPUs
  (/dev/nvidia0...), Cloud TPU chips (/dev/accel*, or /dev/vfio/* on v5p and later)."""
  import glob

  found = sorted(glob.glob('/dev/nvidia[0-9]*')) + sorted(glob.glob('/dev/accel[0-9]*'))
  return found + [p for p in sorted(glob.glob('/dev/vfio/[0-9]*'))]


def log_backend() -> None:
  """Log the backend, device kind and count (after jax.distributed started, if it does); warn when
  JAX runs on the CPU while an accelerator is visible: a CPU-only jaxlib on a GPU or TPU host."""
  import jax

  devices = jax.devices()
  logging.getLogger('ldm_jax').info(
    'JAX %s: backend %s, %d x %s (%d local), %d process(es)',
    jax.__version__,
    jax.default_backend(),
    len(devices),
    devices[0].device_kind,
    jax.local_device_count(),
    jax.process_count(),
  )
  accelerators = visible_accelerators()
  if jax.default_backend() == 'cpu' and accelerators:
    extra = 'tpu' if any('accel' in a or 'vfio' in a for a in accelerators) else 'cuda12'
    logging.getLogger('ldm_jax').warning(
      'running on the CPU, but this machine has %s: JAX was installed without its accelerator '
      "support. Install it with pip install -e '.[%s]' (README, Install), or set "
      'JAX_PLATFORMS=cpu to run on the CPU on purpose.',
      ', '.join(accelerators[:4]),
      extra,
    )


def resolve_config_argv(argv: list[str]) -> list[str]:
  """``--config=configs/x.py`` found among the installed configs when there is no such file here
  (config.find_config), and the folder holding that configs/ put on sys.path, as configs import
  each other as ``configs.<...>`` (the repository root, when run from a checkout)."""
  from ldm_jax.config import find_config

  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith('--config='):
      out[i] = '--config=' + find_config(a[len('--config=') :])
    elif a == '--config' and i + 1 < len(out):
      out[i + 1] = find_config(out[i + 1])
    else:
      continue
    path = os.path.abspath((out[i + 1] if a == '--config' else out[i][9:]).partition(':')[0])
    parts = path.split(os.sep)
    if 'configs' in parts:
      root = os.sep.join(parts[: len(parts) - 1 - parts[::-1].index('configs')])
      if root not in sys.path:
        sys.path.insert(0, root)
  return out


def run_cli(main) -> None:
  """Run an absl ``main`` as a command-line tool: ``--config`` found (resolve_config_argv), and a
  user mistake (errors.UserError, a bad ``--config.key=value``, a full disk) printed as one
  ``error: ...`` line with exit status 2 instead of a traceback; a traceback is for bugs."""
  from absl import app

  sys.excepthook, sys.unraisablehook = _quiet_closed_loop(sys.excepthook, sys.unraisablehook)
  try:
    sys.argv = resolve_config_argv(sys.argv)
    app.run(main, flags_parser=_parse_flags)
  except SystemExit:
    raise
  except BaseException as e:  # pylint: disable=broad-except
    message = user_message(e)
    if message is None:
      raise
    print(f'error: {message}', file=sys.stderr, flush=True)
    if message.startswith('no space left'):
      os._exit(2)  # now: no more tracebacks from threads still writing to the full disk
    sys.exit(2)


def _parse_flags(argv):
  """absl's flag parsing, with its errors (an unknown flag, a bad value, a missing required flag,
  a --config.key=value of the wrong type) as one ``error:`` line and exit 2 instead of absl's
  'FATAL Flags parsing error' and the usage text with exit 1."""
  from absl import flags

  from ldm_jax.errors import UserError

  overrides = [a.split('=')[0] for a in argv if a.startswith('--config.')]
  try:
    args = flags.FLAGS(argv)
    config = getattr(flags.FLAGS, 'config', None) if 'config' in flags.FLAGS else None
    if config is not None and hasattr(config, 'to_dict'):
      from ldm_jax.config import check_types

      check_types(config)
    return args
  except UserError as e:
    print(f'error: {e}', file=sys.stderr, flush=True)
  except flags.Error as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    message = message.replace("('Non-boolean argument to boolean flag', ", 'not true or false (')
    if isinstance(e, flags.UnrecognizedFlagError) and 'config.' in message:
      message += '. ' + _OVERRIDE_HINT
    hint = '' if message.endswith(')') else ' (see --help)'
    print(f'error: {message}{hint}', file=sys.stderr, flush=True)
  except (KeyError, AttributeError) as e:  # ml_collections: an override of a key that is not there
    if not overrides:
      raise
    print(
      f'error: bad config override {" ".join(overrides)}: no key {e}. {_OVERRIDE_HINT}',
      file=sys.stderr,
      flush=True,
    )
  sys.exit(2)


_OVERRIDE_HINT = (
  'Overrides must name an existing key of the config file, e.g. '
  '--config.training.batch_size=64 (see the config file for its keys)'
)


def _quiet_closed_loop(excepthook, unraisablehook):
  """sys.excepthook and sys.unraisablehook without the 'Event loop is closed' tracebacks that
  TensorStore's threads print (through PyErr_Print or PyErr_WriteUnraisable) when their write
  callbacks reach Orbax after a failed checkpoint (a full disk) closed its event loop: dozens of
  them would bury the one error line."""

  def closed(value):
    return isinstance(value, RuntimeError) and str(value) == 'Event loop is closed'

  def quiet(kind, value, tb):
    if not closed(value):
      excepthook(kind, value, tb)

  def quiet_unraisable(unraisable):
    if not closed(unraisable.exc_value):
      unraisablehook(unraisable)

  return quiet, quiet_unraisable


def user_message(error: BaseException) -> str | None:
  """The line to print for a user mistake, None for a bug (anywhere in the exception chain: Orbax
  and TensorStore wrap the OSError of a full disk)."""
  from ldm_jax.errors import UserError

  chain, e = [], error
  while e is not None and e not in chain:
    chain.append(e)
    e = e.__cause__ or e.__context__
  for e in chain:
    if isinstance(e, UserError):
      return str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC or _is_disk_full(str(e)):
      where = getattr(e, 'filename', None)
      return DISK_FULL.format(where=f' writing {where}' if where else '')
  return None  # (flag and config-override mistakes are caught when parsing: _parse_flags)
