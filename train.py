"""Train either LDM stage: the command of ``python -m ldm_jax.train`` (installed as ``ldm-train``), run
from a checkout. See ldm_jax/train/__main__.py for its flags."""

import runpy

if __name__ == '__main__':
  runpy.run_module('ldm_jax.train', run_name='__main__', alter_sys=True)
