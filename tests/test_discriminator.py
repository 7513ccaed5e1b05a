"""The PatchGAN discriminator against a PyTorch NLayerDiscriminator built here from the reference's
definition (taming/modules/discriminator/model.py), at the same weights: keys, shapes, logits in
training mode (batch statistics), running statistics, logits in eval mode; plus the init."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn

from ldm_jax.nn.discriminator import NLayerDiscriminator
from ldm_jax.nn.params import count_params


def torch_nlayer(input_nc=3, ndf=64, n_layers=3):
  """pix2pix/taming NLayerDiscriminator with BatchNorm (use_actnorm=False -> no inner bias)."""
  seq = [tnn.Conv2d(input_nc, ndf, 4, 2, 1), tnn.LeakyReLU(0.2, True)]
  mult = 1
  for n in range(1, n_layers):
    prev, mult = mult, min(2**n, 8)
    seq += [
      tnn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False),
      tnn.BatchNorm2d(ndf * mult),
      tnn.LeakyReLU(0.2, True),
    ]
  prev, mult = mult, min(2**n_layers, 8)
  seq += [
    tnn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False),
    tnn.BatchNorm2d(ndf * mult),
    tnn.LeakyReLU(0.2, True),
    tnn.Conv2d(ndf * mult, 1, 4, 1, 1),
  ]
  model = tnn.Module()
  model.main = tnn.Sequential(*seq)
  return model


def flax_to_torch(variables, tmodel):
  """Copy our variables into the torch module by the reference's key names (main.{idx}.*)."""
  sd = {}
  for name, leaves in variables['params'].items():
    idx = name.split('_')[1]
    if 'kernel' in leaves:
      sd[f'main.{idx}.weight'] = torch.from_numpy(
        np.asarray(leaves['kernel']).transpose(3, 2, 0, 1).copy()
      )
    else:
      sd[f'main.{idx}.weight'] = torch.from_numpy(np.asarray(leaves['scale']).copy())
    if 'bias' in leaves:
      sd[f'main.{idx}.bias'] = torch.from_numpy(np.asarray(leaves['bias']).copy())
  for name, stats in variables['batch_stats'].items():
    idx = name.split('_')[1]
    sd[f'main.{idx}.running_mean'] = torch.from_numpy(np.asarray(stats['mean']).copy())
    sd[f'main.{idx}.running_var'] = torch.from_numpy(np.asarray(stats['var']).copy())
    sd[f'main.{idx}.num_batches_tracked'] = torch.tensor(0)
  missing = set(tmodel.state_dict()) ^ set(sd)
  assert not missing, f'key mismatch with the reference: {sorted(missing)}'
  for k, v in tmodel.state_dict().items():
    assert tuple(v.shape) == tuple(sd[k].shape), k
  tmodel.load_state_dict(sd)


@pytest.mark.parametrize('n_layers,size,out', [(3, 64, 6), (2, 32, 6)])
def test_parity_with_torch_reference(n_layers, size, out):
  disc = NLayerDiscriminator(n_layers=n_layers)
  x = np.random.default_rng(n_layers).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
  variables = disc.init(jax.random.PRNGKey(0), x)
  tmodel = torch_nlayer(n_layers=n_layers)
  flax_to_torch(variables, tmodel)
  assert count_params(variables['params']) == sum(p.numel() for p in tmodel.parameters())

  tmodel.train()
  t_logits = (
    tmodel.main(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  )
  logits, upd = disc.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (4, out, out, 1)
  np.testing.assert_allclose(logits, t_logits, atol=1e-5)
  for name, stats in upd['batch_stats'].items():  # running stats: torch keeps the unbiased var
    idx = int(name.split('_')[1])
    np.testing.assert_allclose(stats['mean'], tmodel.main[idx].running_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(stats['var'], tmodel.main[idx].running_var.numpy(), rtol=1e-5)

  tmodel.eval()
  t_eval = tmodel.main(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  ours_eval = disc.apply({**variables, **upd}, x, train=False)
  np.testing.assert_allclose(ours_eval, t_eval, atol=1e-5)


def test_reference_layout_and_init():
  disc = NLayerDiscriminator(n_layers=3)
  variables = disc.init(jax.random.PRNGKey(1), jnp.zeros((1, 256, 256, 3)))
  p = variables['params']
  assert sorted(p) == [
    'main_0',
    'main_11',
    'main_2',
    'main_3',
    'main_5',
    'main_6',
    'main_8',
    'main_9',
  ]
  assert p['main_8']['kernel'].shape == (4, 4, 256, 512) and 'bias' not in p['main_8']
  assert p['main_11']['kernel'].shape == (4, 4, 512, 1) and 'bias' in p['main_11']
  assert disc.apply(variables, jnp.zeros((1, 256, 256, 3)), train=False).shape == (1, 30, 30, 1)
  w = np.asarray(p['main_5']['kernel'])  # weights_init: conv N(0, 0.02), BN weight N(1, 0.02)
  assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 1e-3
  s = np.asarray(p['main_9']['scale'])
  assert abs(s.mean() - 1) < 5e-3 and abs(s.std() - 0.02) < 5e-3
  assert np.all(np.asarray(p['main_9']['bias']) == 0)


def test_actnorm_data_dependent_init():
  disc = NLayerDiscriminator(n_layers=2, use_actnorm=True)
  x = np.random.default_rng(0).normal(0.3, 2.0, (8, 32, 32, 3)).astype(np.float32)
  variables = disc.init(jax.random.PRNGKey(0), x)
  assert (
    'batch_stats' not in variables and 'bias' in variables['params']['main_2']
  )  # ActNorm: conv bias
  # The first norm's output on the init batch is standardised per channel.
  _, inter = disc.apply(variables, x, capture_intermediates=True, mutable=['intermediates'])
  h = np.asarray(inter['intermediates']['main_3']['__call__'][0]).reshape(-1, 128)
  np.testing.assert_allclose(h.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(h.std(0, ddof=1), 1, atol=1e-3)
