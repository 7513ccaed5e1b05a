"""Draw samples from an LDM: the command of ``python -m ldm_jax.sampling`` (installed as ``ldm-sample``), run
from a checkout. See ldm_jax/sampling/__main__.py for its flags."""

import runpy

if __name__ == '__main__':
  runpy.run_module('ldm_jax.sampling', run_name='__main__', alter_sys=True)
