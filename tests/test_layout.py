"""The package's layering: imports only go downwards, and there is no cycle. Walks every module's
imports (module level and inside functions) with ast; a test that fails on an upward arrow."""

import ast
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'ldm_jax')

# Lower layers first. A module may import its own layer or lower ones; never a higher one.
LAYERS = [
  (
    'config',
    'errors',
    'images',
    'optional',
    'runtime',
    'storage',
    'tensor_files',
    'torch_pickle',
  ),  # settings ... files
  ('nn', 'diffusion', 'parallel'),  # networks, diffusion math, devices
  ('tasks', 'checkpoint'),  # conditions of each task; checkpoints
  ('latent_diffusion',),  # the model glued together
  ('data',),  # sources and batches (knows no task)
  ('sampling',),  # generate, the Python API
  ('eval',),  # metrics and evaluation CLIs
  ('train',),  # the training loop and stages
  (
    'convert',
    'export',
    'summary',
    'aot',
    'cache_latents',
    'cache_text',
    'verify',
    '__init__',
    'configs',
  ),  # interop, tools; the experiment configs on top
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _modules():
  for dirpath, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, '.')
        yield rel.removesuffix('.__init__') if rel != 'ldm_jax.__init__' else rel, path


def _imports(path):
  tree = ast.parse(open(path).read())
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('ldm_jax'):
      # `from pkg import name`: the submodule pkg.name if there is one, else pkg (resolved below)
      yield from (f'{node.module}.{a.name}' for a in node.names)
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith('ldm_jax.'))


def _top(module: str) -> str:
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else '__init__'


def test_every_top_level_name_has_a_layer():
  names = {
    n.removesuffix('.py')
    for n in os.listdir(ROOT)
    if not n.startswith(('.', '_')) and (n.endswith('.py') or os.path.isdir(os.path.join(ROOT, n)))
  } - {'__pycache__'}
  assert names <= set(RANK), f'give these a layer in LAYERS: {sorted(names - set(RANK))}'


def test_imports_only_go_downwards():
  upward = []
  for module, path in _modules():
    for target in _imports(path):
      if target.count('.') == 1 and target.split('.')[1] not in RANK:
        continue  # `from ldm_jax import name` of a package attribute (load, Pipeline)
      if RANK[_top(target)] > RANK[_top(module)]:
        upward.append(f'{module} -> {target}')
  assert not upward, 'imports from a lower layer to a higher one:\n' + '\n'.join(upward)


def test_no_import_cycles():
  graph = {m: {t for t in _imports(p)} for m, p in _modules()}
  modules = set(graph)
  resolve = lambda t: t if t in modules else t.rsplit('.', 1)[0]  # `from module import name`
  graph = {m: {resolve(t) for t in ts} - {m} for m, ts in graph.items()}
  state, stack = {}, []

  def visit(m):
    state[m] = 'active'
    stack.append(m)
    for t in graph.get(m, ()):
      if state.get(t) == 'active':
        pytest.fail('import cycle: ' + ' -> '.join(stack[stack.index(t) :] + [t]))
      if t not in state:
        visit(t)
    stack.pop()
    state[m] = 'done'

  for m in sorted(graph):
    if m not in state:
      visit(m)


def _readme_tree() -> dict:
  """{top-level entry ('config.py', 'nn/', ...): its text} of the README's Layout section."""
  text = open(os.path.join(os.path.dirname(ROOT), 'README.md')).read()
  start = text.index('```\nldm_jax/\n', text.index('## Layout')) + len('```\nldm_jax/\n')
  block = text[start : text.index('\n```', start)]
  entries: dict = {}
  for line in block.splitlines():
    if line.startswith('  ') and not line.startswith('   '):
      name = line.split()[0]
      entries[name] = line
    elif entries:
      entries[name] += ' ' + line.strip()
  return entries


def test_readme_layout_section_names_every_module_and_only_real_ones():
  """The README's Layout tree and the package stay in step: every top-level module and package
  has its line, every module of a package is named in its package's text, and every line names
  something that exists."""
  entries = _readme_tree()
  actual = {
    n if n.endswith('.py') else n + '/'
    for n in os.listdir(ROOT)
    if not n.startswith(('_', '.')) and (n.endswith('.py') or os.path.isdir(os.path.join(ROOT, n)))
  }
  listed = set(entries)
  assert listed == actual, (
    f'README Layout lacks {sorted(actual - listed)}; names missing {sorted(listed - actual)}'
  )
  unnamed = []
  for name in sorted(n for n in actual if n.endswith('/') and n != 'configs/'):  # files: configs
    for dirpath, dirs, files in os.walk(os.path.join(ROOT, name)):
      dirs[:] = [d for d in dirs if d != '__pycache__']
      for f in files + dirs:
        stem = f.removesuffix('.py')
        if f.endswith('.py') and stem in ('__init__',) or not (f.endswith('.py') or f in dirs):
          continue
        if not re.search(rf'\b{re.escape(stem)}\b', entries[name]):
          unnamed.append(os.path.relpath(os.path.join(dirpath, f), ROOT))
  assert not unnamed, f'README Layout does not name: {unnamed}'


def _compared_strings(path):
  """String constants compared (==, !=, in, not in) with something that is not a constant."""
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Compare):
      sides = [node.left, *node.comparators]
      if all(isinstance(s, ast.Constant) for s in sides):
        continue
      for s in sides:
        if isinstance(s, ast.Constant) and isinstance(s.value, str):
          yield node.lineno, s.value
        elif isinstance(s, (ast.Tuple, ast.List, ast.Set)):
          for e in s.elts:
            if isinstance(e, ast.Constant) and isinstance(e.value, str):
              yield node.lineno, e.value


def test_only_the_samplers_package_compares_sampler_names():
  """What code needs of a sampler it asks its record (diffusion/samplers: Sampler), never its
  name: a new sampler is one module and one registration."""
  from ldm_jax.diffusion.samplers import SAMPLERS

  found = [
    f'{os.path.relpath(path, ROOT)}:{line}: {value!r}'
    for module, path in _modules()
    if not module.startswith('ldm_jax.diffusion.samplers')
    for line, value in _compared_strings(path)
    if value in SAMPLERS
  ]
  assert not found, 'sampler names compared outside diffusion/samplers:\n' + '\n'.join(found)


def _is_task_name(node) -> bool:
  """``task.name``, ``ldm.task.name``, ``self.task.name`` or ``config.task``."""
  if isinstance(node, ast.Attribute) and node.attr == 'name':
    inner = node.value
    return (isinstance(inner, ast.Name) and inner.id == 'task') or (
      isinstance(inner, ast.Attribute) and inner.attr == 'task'
    )
  return isinstance(node, ast.Attribute) and node.attr == 'task'


def test_only_the_tasks_package_compares_task_names():
  """What code needs of a task it asks the task's attributes (tasks/base.py: has_condition,
  label_is_condition, fills_a_mask, clip_scored, upsamples, ...), never its name."""
  found = []
  for module, path in _modules():
    if module.startswith('ldm_jax.tasks') or module.startswith('ldm_jax.configs'):
      continue
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Compare) and any(
        _is_task_name(s) for s in [node.left, *node.comparators]
      ):
        found.append(f'{os.path.relpath(path, ROOT)}:{node.lineno}')
  assert not found, 'task names compared outside tasks/:\n' + '\n'.join(found)


# -- sizes (CONTRIBUTING.md: small pieces) ---------------------------------------------------------
REPO = os.path.dirname(ROOT)
MAX_FUNCTION_LINES, MAX_MODULE_LINES, MAX_PARAMETERS = 60, 400, 8


def _python_files():
  for top in ('ldm_jax', 'benchmarks', 'scripts'):
    for dirpath, dirs, files in os.walk(os.path.join(REPO, top)):
      dirs[:] = [d for d in dirs if d != '__pycache__']
      yield from (os.path.join(dirpath, f) for f in files if f.endswith('.py'))
  yield from (os.path.join(REPO, f) for f in ('train.py', 'sample.py'))


def _functions(path):
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      yield node


def _exempt(path: str, name: str) -> bool:
  """Config builders (one line per setting, as the reference's yaml files; keyword arguments
  that mirror the yaml keys) and the solvers' shared signature (model, x, key, schedule and
  each solver's options, as k-diffusion's and diffusers' samplers)."""
  rel = os.path.relpath(path, REPO)
  if rel.startswith(os.path.join('ldm_jax', 'configs')):
    return True
  return rel.startswith(os.path.join('ldm_jax', 'diffusion', 'samplers')) and name.endswith(
    '_sample'
  )


def test_functions_modules_and_signatures_stay_small():
  long, many, big = [], [], []
  for path in _python_files():
    rel = os.path.relpath(path, REPO)
    lines = len(open(path).read().splitlines())
    if lines > MAX_MODULE_LINES:
      big.append(f'{rel}: {lines} lines')
    for f in _functions(path):
      if _exempt(path, f.name):
        continue
      n = f.end_lineno - f.lineno + 1
      if n > MAX_FUNCTION_LINES:
        long.append(f'{rel}:{f.lineno} {f.name}: {n} lines')
      a = f.args
      params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
      params = [p for p in params if p is not None and p.arg not in ('self', 'cls')]
      if len(params) > MAX_PARAMETERS:
        many.append(f'{rel}:{f.lineno} {f.name}: {len(params)} parameters')
  assert not (long or many or big), '\n'.join(long + many + big)


def test_only_entry_points_define_flags():
  """One convention for command lines: a package's __main__.py, or a module whose ``if __name__
  == '__main__':`` defines its flags. Importing any other module defines none (tests, notebooks
  and benchmarks import them)."""
  import subprocess
  import sys

  modules = sorted(
    m
    for m, path in _modules()
    if not m.endswith('__main__') and not m.startswith('ldm_jax.configs')
  )
  code = (
    'import importlib, sys\n'
    'from absl import flags\n'
    'before = set(flags.FLAGS)\n'
    f'for m in {modules!r}:\n'
    '  importlib.import_module(m)\n'
    'new = set(flags.FLAGS) - before\n'
    "print(sorted(n for n in new if 'ldm_jax' in (flags.FLAGS.find_module_defining_flag(n) or '')))\n"
  )
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, timeout=600,
    env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
  )  # fmt: skip
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == '[]', out.stdout


def test_speed_and_memory_figures_live_in_benchmarks_md():
  """Configs say what they set and why; measured or estimated speed and memory are in
  BENCHMARKS.md, with their date and device, not repeated (and left to go stale) in docstrings."""
  figure = re.compile(r'\d\s*(GiB|GB/s|s/step|img/s|images/s|it/s|steps/s|TFLOP)')
  found = []
  for dirpath, _, files in os.walk(os.path.join(ROOT, 'configs')):
    for f in files:
      if f.endswith('.py'):
        path = os.path.join(dirpath, f)
        for i, line in enumerate(open(path), 1):
          if figure.search(line):
            found.append(f'{os.path.relpath(path, ROOT)}:{i}: {line.strip()}')
  assert not found, '\n'.join(found)
