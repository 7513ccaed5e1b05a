"""Stable Diffusion's text encoders and tokenizer against their references, offline at random
weights: transformers' CLIPTextModel (SD 1.x) and OpenCLIP's text tower (SD 2.x), and OpenAI/OpenCLIP's
BPE tokenizer with the vocabulary open_clip_torch ships."""

import importlib.util
import os
import sys
import types

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from ldm_jax.convert.clip_names import openclip_text_to_hf  # noqa: E402
from ldm_jax.convert.torch_names import load_state_dict  # noqa: E402
from ldm_jax.errors import UserError  # noqa: E402
from ldm_jax.nn.clip import FrozenCLIPEmbedder, FrozenOpenCLIPEmbedder  # noqa: E402
from ldm_jax.tasks import tokenizer as tok_lib  # noqa: E402

PROMPTS = [
  'a photograph of an astronaut riding a horse',
  'A   Painting\tof \n  the Sea, by  Monet...',
  "it's a dog's life; they'll've DON'T stop!!",
  'héllo wörld &amp; 日本語のテキスト',
  '&lt;tag&gt; &amp;amp; café naïve résumé Ångström',
  'emoji 🐱🚀 and Ｆｕｌｌｗｉｄｔｈ, mojibake cafÃ©',
  '1234567 3.14159 $100 #hashtag @user',
  ' '.join(['a very long prompt'] * 40),
  '',
]


def _open_clip():
  """OpenCLIP's tokenizer and transformer modules without its package __init__, which imports
  torchvision (no wheel beside this torch build); the text tower does not use torchvision."""
  spec = sys.modules['open_clip'].__spec__ if 'open_clip' in sys.modules else None
  spec = spec or importlib.util.find_spec('open_clip')
  if spec is None:
    pytest.skip('open_clip_torch is not installed')
  if 'torchvision' not in sys.modules:
    misc = types.ModuleType('torchvision.ops.misc')
    misc.FrozenBatchNorm2d = torch.nn.Module
    ops = types.ModuleType('torchvision.ops')
    ops.misc = misc
    tv = types.ModuleType('torchvision')
    tv.ops = ops
    sys.modules.update({'torchvision': tv, 'torchvision.ops': ops, 'torchvision.ops.misc': misc})
  if 'open_clip' not in sys.modules:
    pkg = types.ModuleType('open_clip')
    pkg.__path__ = [os.path.dirname(spec.origin)]
    pkg.__spec__ = spec
    sys.modules['open_clip'] = pkg
  from open_clip import tokenizer, transformer

  return tokenizer, transformer


def _numpy_state(module):
  return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _tokens(vocab, batch=3, length=77, seed=0):
  rng = np.random.default_rng(seed)
  t = rng.integers(1, vocab - 1, (batch, length)).astype(np.int64)
  t[:, 0] = vocab - 2
  ends = rng.integers(3, length, batch)
  for i, e in enumerate(ends):
    t[i, e] = vocab - 1
    t[i, e + 1 :] = 0
  return t


def test_clip_text_model_equals_transformers():
  cfg = transformers.CLIPTextConfig(
    vocab_size=1000, hidden_size=64, intermediate_size=256, num_hidden_layers=3,
    num_attention_heads=4, max_position_embeddings=77, hidden_act='quick_gelu',
    bos_token_id=998, eos_token_id=999, pad_token_id=999,
  )  # fmt: skip
  torch.manual_seed(0)
  ref = transformers.CLIPTextModel(cfg).eval()
  model = FrozenCLIPEmbedder(width=64, layers=3, heads=4, vocab_size=1000)
  tokens = _tokens(1000)
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens[:1]))['params']
  # transformers 5 names the state dict without the text_model. prefix that SD checkpoints and
  # diffusers folders (written by transformers 4) hold
  state = {('' if k.startswith('text_model.') else 'text_model.') + k: v
           for k, v in _numpy_state(ref).items()}  # fmt: skip
  params = {
    'transformer': load_state_dict(
      template['transformer'], state, ignore=('text_model.embeddings.position_ids',)
    )
  }
  with torch.no_grad():
    want = ref(input_ids=torch.from_numpy(tokens)).last_hidden_state.numpy()
  got = np.asarray(model.apply({'params': params}, tokens))
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize('layer', ['penultimate', 'last'])
def test_openclip_text_tower_equals_open_clip(layer):
  _, oc_transformer = _open_clip()
  torch.manual_seed(0)
  ref = oc_transformer.TextTransformer(
    context_length=77, vocab_size=1000, width=64, heads=4, layers=3, output_dim=32,
    act_layer=torch.nn.GELU,
  ).eval()  # fmt: skip
  with torch.no_grad():  # open_clip initialises the projection only in CLIP.init_parameters
    ref.text_projection.normal_(std=64**-0.5)
  model = FrozenOpenCLIPEmbedder(width=64, layers=3, heads=4, layer=layer, projection_dim=32,
                                 vocab_size=1000)  # fmt: skip
  tokens = _tokens(1000)
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens[:1]))['params']
  state = {'model.' + k: v for k, v in _numpy_state(ref).items() if k != 'attn_mask'}
  state['model.logit_scale'] = np.asarray(
    np.log(1 / 0.07), np.float32
  )  # CLIP holds it, not the tower
  params = load_state_dict(template, openclip_text_to_hf(state, 'model.'))
  # FrozenOpenCLIPEmbedder.encode_with_transformer: embeddings, all layers but `skip` (layer=
  # 'penultimate': the last one is skipped), then ln_final
  skip = 1 if layer == 'penultimate' else 0
  t = torch.from_numpy(tokens)
  with torch.no_grad():
    x = ref.token_embedding(t) + ref.positional_embedding
    for r in ref.transformer.resblocks[: len(ref.transformer.resblocks) - skip]:
      x = r(x, attn_mask=ref.attn_mask)
    want = ref.ln_final(x).numpy()
    pooled_want = ref(t).numpy()  # the projected end-of-text state (pool_type 'argmax')
  got = np.asarray(model.apply({'params': params}, tokens))
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
  pooled = _pooled(model, params, tokens)
  np.testing.assert_allclose(np.asarray(pooled), pooled_want, atol=2e-5, rtol=1e-4)


def _pooled(model, params, tokens):
  from ldm_jax.nn.clip import CLIPTextModel

  inner = CLIPTextModel(
    model.width, model.layers, model.heads, model.act, model.layer, model.projection_dim,
    model.vocab_size,
  )  # fmt: skip
  return inner.apply({'params': params['model']}, tokens, 999, method='pooled')


def test_tokenizer_equals_open_clip_and_transformers():
  oc_tokenizer, _ = _open_clip()
  pytest.importorskip('ftfy')
  sd2 = tok_lib.load_clip_tokenizer('pypi:open_clip_torch', pad_token_id=0)
  np.testing.assert_array_equal(sd2(PROMPTS), oc_tokenizer.tokenize(PROMPTS).numpy())
  # SD 1.x: transformers' CLIPTokenizer (as the reference calls it: truncate, pad to 77 with
  # <|endoftext|>). transformers 5 does without ftfy and HTML unescaping, which the reference's
  # tokenizer applied, so it is compared on prompts those leave unchanged.
  vocab, merges = tok_lib.clip_vocab_from_bpe(tok_lib._resolve('pypi:open_clip_torch'))
  hf = transformers.CLIPTokenizer(vocab=vocab, merges=merges)
  sd1 = tok_lib.load_clip_tokenizer('pypi:open_clip_torch', pad_token_id=49407)
  plain = [p for p in PROMPTS if tok_lib.clean_clip_text(p) == ' '.join(p.lower().split())]
  assert len(plain) >= 4
  want = hf(plain, truncation=True, max_length=77, padding='max_length')['input_ids']
  np.testing.assert_array_equal(sd1(plain), np.asarray(want))
  ids = sd1(PROMPTS)
  assert ids.shape == (len(PROMPTS), 77) and ids.dtype == np.int32
  assert (ids[:, 0] == 49406).all() and (ids[-2, -1] == 49407)  # the long prompt keeps its end
  assert sd1.batch_decode(sd1(['a photo of a cat']))[0].strip() == 'a photo of a cat'


def test_tokenizer_from_a_diffusers_folder(tmp_path):
  """A diffusers pipeline's tokenizer/ folder (vocab.json + merges.txt) gives the same ids."""
  import json

  vocab, merges = tok_lib.clip_vocab_from_bpe(tok_lib._resolve('pypi:open_clip_torch'))
  (tmp_path / 'vocab.json').write_text(json.dumps(vocab), encoding='utf-8')
  (tmp_path / 'merges.txt').write_text(
    '#version: 0.2\n' + '\n'.join(' '.join(m) for m in merges) + '\n', encoding='utf-8'
  )
  a = tok_lib.load_clip_tokenizer(str(tmp_path))(PROMPTS)
  b = tok_lib.load_clip_tokenizer('pypi:open_clip_torch')(PROMPTS)
  np.testing.assert_array_equal(a, b)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(UserError, match='vocab.json'):
    tok_lib.load_clip_tokenizer(str(tmp_path / 'empty'))


def test_clip_text_embedding_for_rdm_prompts(tmp_path):
  """python -m ldm_jax.convert clip on a transformers CLIPModel folder gives knn2img.py's text
  conditioning (the normalised projected end-of-text state, CLIP's get_text_features), and a
  retrieval-augmented model samples from a prompt with it."""

  from ldm_jax.convert.clip_text import convert_clip_text
  from ldm_jax.tasks.embeddings import clip_text_embedder

  ref = tiny_clip_folder(str(tmp_path / 'clip'))
  report = convert_clip_text(str(tmp_path / 'clip'), str(tmp_path / 'out'))
  assert report['model']['projection_dim'] == 16 and report['vision']['patch'] == 16
  prompts = ['a painting of a fox', 'a photograph of a city at night']
  got = clip_text_embedder(str(tmp_path / 'out'))(prompts)
  tokens = tok_lib.load_clip_tokenizer('pypi:open_clip_torch', pad_token_id=0)(prompts)
  with torch.no_grad():
    want = ref.get_text_features(input_ids=torch.from_numpy(tokens.astype(np.int64)))
  want = getattr(want, 'pooler_output', want).numpy()
  want = want / np.linalg.norm(want, axis=-1, keepdims=True)
  np.testing.assert_allclose(got, want, atol=2e-5)
  # The image tower and the CLIP score (torchmetrics' 100 x max(cos, 0)) on the same pixels.
  from ldm_jax.eval.clip_score import ClipScore
  from ldm_jax.nn.clip import clip_pixels

  images = np.random.default_rng(0).integers(0, 256, (2, 48, 40, 3)).astype(np.uint8)
  pixels = np.asarray(clip_pixels(images, 32))
  assert pixels.shape == (2, 32, 32, 3)
  scorer = ClipScore(str(tmp_path / 'out'))
  with torch.no_grad():
    img = ref.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
  img = getattr(img, 'pooler_output', img).numpy()
  img = img / np.linalg.norm(img, axis=-1, keepdims=True)
  np.testing.assert_allclose(scorer.embed_images(images), img, atol=2e-5)
  np.testing.assert_allclose(
    scorer(images, prompts), 100 * np.maximum((img * want).sum(-1), 0), atol=2e-3
  )

  import ldm_jax
  from ldm_jax.configs.released import rdm_768

  c = rdm_768.get_config()
  c.data.update(dict(image_size=16, source='digits'))
  c.first_stage.update(dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=16,
                            attn_resolutions=(), embed_dim=4, z_channels=4))  # fmt: skip
  c.unet.update(dict(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,),
                     num_head_channels=16, context_dim=16, num_res_blocks=1))  # fmt: skip
  c.cond_stage.update(dict(channels=16, clip_text=str(tmp_path / 'out')))
  pipe = ldm_jax.load(c)
  images = pipe.sample(2, prompt='a painting of a fox', guidance_scale=5.0, steps=4)
  assert images.shape == (2, 16, 16, 3)
  cond, _, _ = pipe.condition(2, prompt=prompts)
  np.testing.assert_allclose(cond[:, 0], want, atol=2e-5)
  with pytest.raises(Exception, match='--embeddings=FILE.npy or --prompt'):
    pipe.condition(1, prompt='x', embeddings=np.zeros((1, 16)))


def tiny_clip_folder(path: str):
  """A random tiny transformers CLIPModel saved as a folder with CLIP's real BPE vocabulary (from
  open_clip's wheel); returns the torch model."""
  import json
  import pathlib

  cfg = transformers.CLIPConfig(
    text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77, eos_token_id=49407),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, image_size=32, patch_size=16),
    projection_dim=16,
  )  # fmt: skip
  torch.manual_seed(0)
  ref = transformers.CLIPModel(cfg).eval()
  ref.save_pretrained(path, safe_serialization=True)
  vocab, merges = tok_lib.clip_vocab_from_bpe(tok_lib._resolve('pypi:open_clip_torch'))
  (pathlib.Path(path) / 'vocab.json').write_text(json.dumps(vocab), encoding='utf-8')
  (pathlib.Path(path) / 'merges.txt').write_text(
    '#version: 0.2\n' + '\n'.join(' '.join(m) for m in merges) + '\n', encoding='utf-8'
  )
  return ref
