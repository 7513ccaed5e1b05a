"""ldm_jax.train.ema: the reference's LitEma warm-up and update."""

import jax.numpy as jnp
import pytest

from ldm_jax.train.ema import ema_decay, ema_update


def test_ema_warmup_and_update():
  assert float(ema_decay(1)) == pytest.approx(2 / 11)
  assert float(ema_decay(10**7)) == pytest.approx(0.9999)
  new = ema_update({'w': jnp.array(1.0)}, {'w': jnp.array(0.0)}, 1)
  assert float(new['w']) == pytest.approx(2 / 11)
