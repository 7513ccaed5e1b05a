"""Execute notebooks/*.ipynb top to bottom and store their outputs (the images people see when they
open them on GitHub or Colab): python scripts/run_notebooks.py [NAME.ipynb ...]

Needs `pip install nbclient ipykernel`. Runs offline at the notebooks' tiny random weights, from
the repository root, on whatever JAX finds (the stored outputs were made on a CPU).
"""

import os
import sys

import nbformat
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clean(nb) -> None:
  """No per-run noise in the stored notebook: timings, stderr (library warnings), and one image
  format (PNG) per picture."""
  for cell in nb.cells:
    cell.get('metadata', {}).pop('execution', None)
    if cell.cell_type != 'code':
      continue
    cell.outputs = [
      o for o in cell.outputs if not (o.output_type == 'stream' and o.name == 'stderr')
    ]
    for o in cell.outputs:
      if 'data' in o and 'image/png' in o['data']:
        o['data'].pop('image/jpeg', None)


def run(path: str) -> None:
  nb = nbformat.read(path, as_version=4)
  NotebookClient(
    nb, timeout=1200, kernel_name='python3', resources={'metadata': {'path': ROOT}}
  ).execute()
  clean(nb)
  nbformat.write(nb, path)
  print('executed', path)


if __name__ == '__main__':
  names = sys.argv[1:] or sorted(
    n for n in os.listdir(os.path.join(ROOT, 'notebooks')) if n.endswith('.ipynb')
  )
  for name in names:
    run(os.path.join(ROOT, 'notebooks', os.path.basename(name)))
