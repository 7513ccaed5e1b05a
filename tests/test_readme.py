"""Every command the README shows is checked, so that a README edit (or a renamed flag) that breaks
one fails here: the program exists; every ``--flag`` is one it defines (read from its
``--helpxml``), with a value of the flag's type or among its choices; every ``--config=FILE``
loads; every ``--config.key=value`` names a real key, parses to its type and passes
``config.validate``; every ``pip install -e '.[extra]'`` names an extra of setup.cfg and every
``bash scripts/x.sh`` exists. The two quick-start scripts are run by CI itself (.ci/run).

Commands come from the fenced code blocks (continuation lines joined) and from inline code spans
in the prose that start with ``python``. Placeholders (DIR, N, ``<name>``, ``...``, ``[--opt]``,
``a|b``) are taken as "any value": their flag names are still checked."""

import concurrent.futures
import configparser
import functools
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import ROOT

README = os.path.join(ROOT, 'README.md')
PYTHON = re.compile(r'^(?:[A-Z_]+=\S+ )*python3? ')


def fenced_lines():
  """(line number, text) of the shell lines in the README's fenced code blocks, continuations
  joined."""
  out, fence, pending = [], None, None
  for i, line in enumerate(open(README).read().splitlines(), 1):
    if line.lstrip().startswith('```'):
      fence = None if fence is not None else line.strip()[3:]
      continue
    if fence not in ('bash', 'sh', 'shell', ''):
      continue
    text = line.strip()
    if pending is not None:
      text, start = pending[1] + ' ' + text, pending[0]
      pending = None
    else:
      start = i
    if text.endswith('\\'):
      pending = (start, text[:-1].rstrip())
      continue
    if text and not text.startswith('#'):
      out.append((start, text))
  return out


def _strip_comment(text: str) -> str:
  return re.sub(r'\s+#\s.*$', '', text)


def readme_commands():
  """(line number, command) of every command: python programs (also inside `ssh --command="..."`
  and after `srun ...`), console scripts, bash scripts and pip installs."""
  out = []
  for n, text in fenced_lines():
    text = _strip_comment(text)
    m = re.search(r'(?:^|&& |\s)((?:[A-Z_]+=\S+ )*(?:python3? |ldm-\w+ |bash scripts/).*)', text)
    if m and not text.startswith(('python3 -m venv', 'BIN=$(')) and ' -c ' not in text:
      out.append((n, m.group(1).rstrip('"').strip()))
    elif text.startswith('pip install'):
      out.append((n, text))
  for n, line in enumerate(open(README).read().splitlines(), 1):
    for span in re.findall(r'`([^`]+)`', line):
      if PYTHON.match(span) and span not in {c for _, c in out}:
        out.append((n, span))
  return out


def _console_scripts() -> dict:
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  scripts = {}
  for line in cfg['options.entry_points']['console_scripts'].strip().splitlines():
    name, _, target = (p.strip() for p in line.partition('='))
    scripts[name] = target.split(':')[0].removesuffix('.__main__')
  return scripts


def program_and_args(command: str):
  """(the argv prefix that runs the program, its arguments) of a python/console-script command."""
  tokens = shlex.split(command)
  while tokens and re.match(r'^[A-Z_]+=', tokens[0]):
    tokens.pop(0)
  if tokens[0] in _console_scripts():
    return ('-m', _console_scripts()[tokens[0]]), tokens[1:]
  assert tokens[0] in ('python', 'python3'), command
  if tokens[1] == '-m':
    return ('-m', tokens[2]), tokens[3:]
  return (tokens[1],), tokens[2:]


@functools.lru_cache(maxsize=None)
def defined_flags(program: tuple) -> dict | None:
  """{flag name: (type, enum values)} that ``program`` defines, from absl's --helpxml (None: the
  program takes no flags, only positional arguments)."""
  if program[0] == '-m':
    import importlib.util

    assert importlib.util.find_spec(program[1]) is not None, f'no module {program[1]}'
  else:
    assert os.path.isfile(os.path.join(ROOT, program[0])), f'no file {program[0]}'
  r = subprocess.run(
    [sys.executable, *program, '--helpxml'],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
  )
  if '<?xml' not in r.stdout:
    return None  # not an absl program (positional arguments only)
  xml = r.stdout[r.stdout.find('<?xml') :]
  flags = {}
  for f in ET.fromstring(xml).iter('flag'):
    flags[f.findtext('name')] = (f.findtext('type'), [e.text for e in f.iter('enum_value')])
  return flags


def _placeholder(value: str) -> bool:
  return (
    not value
    or value == '...'
    or bool(re.search(r'[<>|]|\.\.\.|^[A-Z][A-Z_]*$|^[A-Z]+[/.]|\$', value))
  )


def check_value(flag: str, value: str, kind: str, choices: list) -> str | None:
  if _placeholder(value):
    return None
  try:
    if kind == 'int':
      int(value)
    elif kind == 'float':
      float(value)
    elif kind == 'bool' and value.lower() not in ('true', 'false', '1', '0'):
      return f'--{flag}={value}: not a bool'
  except ValueError:
    return f'--{flag}={value}: not a {kind}'
  if choices and value not in choices:
    return f'--{flag}={value}: not one of {choices}'
  return None


def _parse_config(config_file: str, overrides: list):
  from absl import flags
  from ml_collections import config_flags

  from ldm_jax.config import find_config

  fv = flags.FlagValues()
  argv = ['prog', f'--config={find_config(config_file)}', *overrides]
  config_flags.DEFINE_config_file('config', None, 'c', fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def check_config(config_file: str, overrides: list, validated: bool) -> str | None:
  """Load the config file with its overrides as the commands do (``validated``: and check it as
  train.py does); None when they are valid. A placeholder value (``=DIR``) stands for any value:
  its key must exist, and it is parsed where the key holds a string."""
  from ldm_jax.config import validate

  try:
    config = _parse_config(config_file, [])
    kept = []
    for arg in overrides:
      key, _, value = arg[len('--config.') :].partition('=')
      node = config
      for part in key.split('.'):
        if part not in node:
          return f'{config_file}: no config key {key!r}'
        node = node[part]
      if not _placeholder(value) or isinstance(node, str):
        kept.append(arg)
    config = _parse_config(config_file, kept)
    if validated:
      validate(config)
  except Exception as e:  # noqa: BLE001 (reported as the failure)
    return f'{config_file} {overrides}: {type(e).__name__}: {e}'
  return None


def check_command(command: str) -> list[str]:
  """The problems of one README command (empty when it is fine)."""
  if command.startswith('bash '):
    path = shlex.split(command)[1]
    return [] if os.path.isfile(os.path.join(ROOT, path)) else [f'no script {path}']
  if command.startswith('pip install'):
    problems = []
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, 'setup.cfg'))
    for extras in re.findall(r'\.\[([\w,]+)\]', command):
      for extra in extras.split(','):
        if extra not in cfg['options.extras_require']:
          problems.append(f'no extra {extra!r} in setup.cfg')
    return problems
  program, args = program_and_args(command)
  known = defined_flags(program)
  if known is None:
    flagged = [a for a in args if a.startswith('--')]
    return [f'{program} takes no flags, given {flagged}'] if flagged else []
  problems, config_file, overrides = [], None, []
  for arg in args:
    arg = arg.strip('[]')
    if not arg.startswith('--'):
      continue
    name, eq, value = arg[2:].partition('=')
    if name.startswith('config.'):
      if 'config' not in known:
        problems.append(f'{arg}: {program} has no --config')
      overrides.append(arg)
      continue
    if name == 'config':
      config_file = None if _placeholder(value) or '<' in value else value
    base = name[2:] if name.startswith('no') and name[2:] in known else name
    if base not in known:
      problems.append(f'--{name}: {program} defines no such flag')
      continue
    if eq:
      problems.append(check_value(name, value, *known[base]))
  if config_file is not None:
    trains = program in (('train.py',), ('-m', 'ldm_jax.train'), ('-m', 'ldm_jax.aot'))
    problems.append(check_config(config_file, overrides, validated=trains))
  return [p for p in problems if p]


def test_readme_has_the_commands_a_newcomer_runs():
  commands = [c for _, c in readme_commands()]
  assert commands[:2] == ['bash scripts/demo.sh', 'bash scripts/test.sh']
  assert len(commands) >= 40, commands


def test_every_readme_command_names_real_programs_flags_and_config_keys():
  commands = readme_commands()
  programs = {
    program_and_args(c)[0] for _, c in commands if PYTHON.match(c) or c.startswith('ldm-')
  }
  with concurrent.futures.ThreadPoolExecutor(2) as pool:  # --helpxml of each program, once
    list(pool.map(defined_flags, sorted(programs)))
  problems = [f'README.md:{n}: {c}\n  {p}' for n, c in commands for p in check_command(c)]
  assert not problems, '\n'.join(problems)


@pytest.mark.parametrize(
  'command, problem',
  [
    ('python sample.py --workdir=DIR --no_such_flag=1', 'defines no such flag'),
    ('python sample.py --workdir=DIR --sampler=ddimm', 'not one of'),
    ('python sample.py --workdir=DIR --num_samples=many', 'not a int'),
    ('python train.py --config=configs/digits_ldm.py --config.training.no_key=1', 'no_key'),
    ('python train.py --config=configs/digits_ldm.py --config.training.num_steps=abc', 'abc'),
    ('python train.py --config=configs/no_such_config.py', 'not found'),
    ('python -m ldm_jax.no_such_module --x=1', 'no module'),
    ("pip install -e '.[cuda99]'", "no extra 'cuda99'"),
    ('bash scripts/no_such.sh', 'no script'),
  ],
)
def test_the_checker_catches_a_broken_command(command, problem):
  try:
    found = check_command(command)
  except AssertionError as e:
    found = [str(e)]
  assert any(problem in p for p in found), found
