"""Where the time goes: a jax.profiler trace of the timed calls, and its top HLO ops.

  python benchmarks/run.py --profile=/tmp/prof ...     # every measurement of run.py, traced
  python benchmarks/hlo_profile.py /tmp/prof/train         # the table again from a saved trace

Each measurement's timed calls are traced into ``DIR/<what>/`` (open it in TensorBoard's or
XProf's profile tab: ``tensorboard --logdir DIR`` or ``xprof --logdir DIR``), and the ops that took
the most time are printed: milliseconds per call, share of the traced op time, the HLO module,
and the op's HLO line (from the compiled program) so that a slow convolution shows its window and
dim_labels, a fusion what it fuses. On CPU every thunk of XLA's runtime is an event; on GPUs and
TPUs the device planes carry the kernels.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import sys

# Ops whose events enclose their bodies' ops (counted there): left out, or time counts twice.
_CONTAINERS = ('while', 'conditional', 'call')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$')


def hlo_lines(hlo_text: str) -> dict[str, str]:
  """Instruction name -> its HLO line, over every computation of a compiled module's text."""
  out = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if m:
      out.setdefault(m.group(1), m.group(2).strip())
  return out


def op_times(trace_dir: str) -> dict[tuple[str, str], list[float]]:
  """(HLO module, op name) -> [total ns, count], over the events of every ``*.xplane.pb`` below
  ``trace_dir`` that name an HLO op (CPU thunks; GPU/TPU kernels), loops and calls left out (their
  bodies' ops are there)."""
  from jax.profiler import ProfileData

  totals: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
  paths = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True)
  if not paths:
    raise FileNotFoundError(f'no *.xplane.pb under {trace_dir!r}: was it written by jax.profiler?')
  for path in paths:
    for plane in ProfileData.from_file(path).planes:
      for line in plane.lines:
        for event in line.events:
          stats = dict(event.stats)
          op = stats.get('hlo_op')
          if not op or str(op).split('.')[0] in _CONTAINERS:
            continue
          entry = totals[(str(stats.get('hlo_module', '?')), str(op))]
          entry[0] += float(event.duration_ns)
          entry[1] += 1
  return dict(totals)


def top_ops(trace_dir: str, hlo_texts=(), calls: int = 1, top: int = 15) -> list[dict]:
  """The ``top`` ops by total time: ms per call (``calls`` traced calls), share of all op time,
  and the HLO line where one of ``hlo_texts`` (compiled modules' ``as_text()``) defines the op."""
  lines = {}
  for text in hlo_texts:
    for name, line in hlo_lines(text).items():
      lines.setdefault(name, line)
  times = op_times(trace_dir)
  total = sum(t for t, _ in times.values()) or 1.0
  rows = []
  for (module, op), (ns, count) in sorted(times.items(), key=lambda kv: -kv[1][0])[:top]:
    rows.append(
      {
        'op': op,
        'module': module,
        'ms_per_call': round(ns / 1e6 / max(calls, 1), 3),
        'share': round(ns / total, 4),
        'count_per_call': count / max(calls, 1),
        'hlo': lines.get(op, ''),
      }
    )
  return rows


_OP_NAME = re.compile(r'op_name="([^"]*)"')


def format_table(rows: list[dict], hlo_width: int = 150) -> str:
  """Two lines per op: time, share, name, module and the source op (the Flax module path from
  the HLO metadata); then the HLO instruction without its metadata."""
  out = [f'{"ms/call":>9} {"share":>6}  op (module)  <- source op', f'{"":>17}HLO']
  for r in rows:
    core = r['hlo'].split(', metadata=')[0]
    source = _OP_NAME.search(r['hlo'])
    out.append(
      f'{r["ms_per_call"]:9.3f} {100 * r["share"]:5.1f}%  {r["op"]} ({r["module"]})'
      + (f'  <- {source.group(1)[-110:]}' if source else '')
    )
    if core:
      out.append(f'{"":>17}{core[:hlo_width]}')
  return '\n'.join(out)


def save(directory: str, compiled, calls: int) -> list[dict]:
  """Beside a trace: the compiled programs' HLO (hlo_<i>.txt) and the traced call count, so that
  ``python benchmarks/hlo_profile.py DIR`` prints the same table later; returns the top ops."""
  texts = [c.as_text() for c in compiled]
  for i, text in enumerate(texts):
    with open(os.path.join(directory, f'hlo_{i}.txt'), 'w') as f:
      f.write(text)
  with open(os.path.join(directory, 'calls.txt'), 'w') as f:
    f.write(str(calls))
  return top_ops(directory, texts, calls, top=1000)


def main(argv: list[str]) -> None:
  if len(argv) not in (2, 3):
    raise SystemExit(
      'usage: python benchmarks/hlo_profile.py TRACE_DIR [TOP]  (from run.py --profile)'
    )
  directory = argv[1]
  texts = [open(p).read() for p in sorted(glob.glob(os.path.join(directory, 'hlo_*.txt')))]
  calls_file = os.path.join(directory, 'calls.txt')
  calls = int(open(calls_file).read()) if os.path.exists(calls_file) else 1
  print(format_table(top_ops(directory, texts, calls, top=int(argv[2]) if len(argv) > 2 else 25)))


if __name__ == '__main__':
  main(sys.argv)
