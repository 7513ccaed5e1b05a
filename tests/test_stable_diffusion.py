"""Stable Diffusion: the released layouts against the reference models (parameter names, shapes and
counts), and tiny random-weight SD 1.x / 2.x pipelines in both formats (diffusers folders, CompVis
checkpoints) against diffusers' StableDiffusionPipeline: text encoder, UNet (eps and v), whole
guided DDIM runs with negative prompts; image-to-image; sample.py on converted checkpoints."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')
transformers = pytest.importorskip('transformers')

import ldm_jax  # noqa: E402
from ldm_jax.configs.released import sd_v1, sd_v2_768_v, sd_v2_base  # noqa: E402
from ldm_jax.convert.clip_names import clip_text_to_compvis, openclip_text_to_hf  # noqa: E402
from ldm_jax.convert.compvis import convert_compvis  # noqa: E402
from ldm_jax.convert.diffusers import (  # noqa: E402
  convert_diffusers,
  first_stage_to_compvis,
  unet_to_compvis,
)
from ldm_jax.errors import UserError  # noqa: E402
from ldm_jax.latent_diffusion import abstract_params  # noqa: E402
from ldm_jax.nn.params import count_params  # noqa: E402
from ldm_jax.tasks import tokenizer as tok_lib  # noqa: E402
from tests.test_architecture import assert_maps_one_to_one  # noqa: E402
from tests.test_clip import _open_clip  # noqa: E402
from tests.test_convert_diffusers import _kl, _max_err, _nchw, _nhwc, _perturb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4


# -- the released layouts ----------------------------------------------------------------------
def _sd_unet_config(version: int, in_channels: int = 4) -> dict:
  """diffusers' UNet2DConditionModel config of the SD checkpoints (unet/config.json)."""
  cfg = dict(
    sample_size=64,
    in_channels=in_channels,
    out_channels=4,
    down_block_types=('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',),
    up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
  )
  if version == 2:
    cfg.update(
      cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True
    )
  return cfg


def _meta_rows(module, prefix=''):
  return [(prefix + k, tuple(v.shape)) for k, v in module.state_dict().items()]


@pytest.mark.parametrize(
  'config_module,version,unet_params,text_params',
  [
    (sd_v1, 1, 859_520_964, 123_060_480),
    (sd_v2_base, 2, 865_910_724, 354_032_641),
    (sd_v2_768_v, 2, 865_910_724, 354_032_641),
  ],
)
def test_sd_configs_equal_reference_models(config_module, version, unet_params, text_params):
  """Every parameter of diffusers' SD UNet and of the reference text encoder (transformers'
  CLIPTextModel ViT-L/14; OpenCLIP's ViT-H/14 text tower with all 24 layers, text projection and
  logit scale, as FrozenOpenCLIPEmbedder's state dict holds them) has one leaf of the right shape
  here and the reverse; counts recorded (diffusers/transformers/open_clip built on the meta
  device)."""
  config = config_module.get_config()
  shapes = abstract_params(config)
  unet_cfg = _sd_unet_config(version)
  with torch.device('meta'):
    unet = diffusers.UNet2DConditionModel(**unet_cfg)
  rows = dict(_meta_rows(unet))
  names = unet_to_compvis(
    {k: k for k in rows}, {**unet_cfg, '_class_name': 'UNet2DConditionModel'}, ''
  )
  assert_maps_one_to_one(shapes['unet'], [(ours, rows[theirs]) for ours, theirs in names.items()])
  assert count_params(shapes['unet']) == sum(int(np.prod(s)) for s in rows.values()) == unet_params
  with torch.device('meta'):
    if version == 1:
      text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
          hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
          max_position_embeddings=77, hidden_act='quick_gelu', vocab_size=49408,
        )
      )  # fmt: skip
      text_rows = _meta_rows(
        text, '' if next(iter(text.state_dict())).startswith('text_model') else 'text_model.'
      )
      text_rows = [(k, s) for k, s in text_rows if not k.endswith('position_ids')]
      cond_rows = [('transformer.' + k, s) for k, s in text_rows]
    else:
      _, oc = _open_clip()
      text = oc.TextTransformer(
        context_length=77, vocab_size=49408, width=1024, heads=16, layers=24, output_dim=1024,
        act_layer=torch.nn.GELU,
      )  # fmt: skip
      text_rows = [(k, s) for k, s in _meta_rows(text) if k != 'attn_mask'] + [('logit_scale', ())]
      renamed = openclip_text_to_hf(
        {'model.' + k: np.empty(s, np.int8) for k, s in text_rows}, 'model.'
      )
      cond_rows = [(k, v.shape) for k, v in renamed.items()]
  assert_maps_one_to_one(shapes['cond_stage'], cond_rows)
  assert (
    count_params(shapes['cond_stage']) == sum(int(np.prod(s)) for _, s in text_rows) == text_params
  )


# -- tiny pipelines ----------------------------------------------------------------------------
def _tiny_unet(version, seed=3):
  cfg = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
    cross_attention_dim=32,
    attention_head_dim=4 if version == 1 else (2, 4),  # SD 2: one head width (16), per-level counts
    use_linear_projection=version == 2,
    norm_num_groups=32,
  )
  return _perturb(diffusers.UNet2DConditionModel(**cfg), seed)


def _tiny_clip(version, seed=4):
  cfg = transformers.CLIPTextConfig(
    vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, max_position_embeddings=77,
    hidden_act='quick_gelu' if version == 1 else 'gelu',
  )  # fmt: skip
  torch.manual_seed(seed)
  return _perturb(transformers.CLIPTextModel(cfg), seed)


def _write_tokenizer(folder, pad):
  """A tokenizer folder as SD's diffusers repositories hold it (vocab.json, merges.txt, special
  tokens; pad '<|endoftext|>' in SD 1.x, '!' in SD 2.x)."""
  vocab, merges = tok_lib.clip_vocab_from_bpe(tok_lib._resolve('pypi:open_clip_torch'))
  os.makedirs(folder)
  with open(os.path.join(folder, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(vocab, f)
  with open(os.path.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
    f.write('#version: 0.2\n' + '\n'.join(' '.join(m) for m in merges) + '\n')
  special = dict(bos_token='<|startoftext|>', eos_token='<|endoftext|>',
                 unk_token='<|endoftext|>', pad_token=pad)  # fmt: skip
  with open(os.path.join(folder, 'special_tokens_map.json'), 'w') as f:
    json.dump(special, f)
  with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
    json.dump({**special, 'model_max_length': 77, 'tokenizer_class': 'CLIPTokenizer'}, f)


def _scheduler(version):
  return diffusers.DDIMScheduler(
    beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', clip_sample=False,
    set_alpha_to_one=False, steps_offset=1,
    prediction_type='epsilon' if version == 1 else 'v_prediction',
  )  # fmt: skip


def _sd_pipeline(version, folder, inpainting=False):
  """A tiny StableDiffusion(Inpaint)Pipeline, saved to ``folder`` as SD's repositories hold it."""
  unet, vae, text = _tiny_unet(version), _kl(), _tiny_clip(version)
  if inpainting:  # a 9-channel UNet: [x, mask, masked image latents]
    unet = _perturb(diffusers.UNet2DConditionModel(**{**dict(unet.config), 'in_channels': 9}), 8)
  tokenizer_dir = str(folder) + '_tokenizer'
  _write_tokenizer(tokenizer_dir, '<|endoftext|>' if version == 1 else '!')
  tokenizer = transformers.CLIPTokenizer.from_pretrained(tokenizer_dir)
  cls = (
    diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
  )
  pipe = cls(
    vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=_scheduler(version),
    safety_checker=None, feature_extractor=None, requires_safety_checker=False,
  )  # fmt: skip
  pipe.set_progress_bar_config(disable=True)
  pipe.save_pretrained(str(folder), safe_serialization=True)
  import shutil

  shutil.rmtree(os.path.join(folder, 'tokenizer'))  # the SD repositories' file layout
  shutil.copytree(tokenizer_dir, os.path.join(folder, 'tokenizer'))
  return pipe


@pytest.mark.parametrize('version', [1, 2])
def test_sd_pipeline_equals_diffusers(version, tmp_path):
  """A diffusers SD folder converts and then gives diffusers' own results: the tokens, the text
  encoder's states, the UNet's output (eps for SD 1, v for SD 2) and a whole guided DDIM run
  with a negative prompt from the same starting latents."""
  ref = _sd_pipeline(version, tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  cs = pipe.config.cond_stage
  assert (cs.kind, cs.act, cs.pad_token_id, cs.trainable) == (
    'clip', 'quick_gelu' if version == 1 else 'gelu', 49407 if version == 1 else 0, False
  )  # fmt: skip
  assert pipe.config.diffusion.parameterization == ('eps' if version == 1 else 'v')
  assert pipe.config.unet.use_linear_in_transformer == (version == 2)

  prompts = ['a photograph of an astronaut riding a horse', 'an oil painting of a tree, by monet']
  negative = ['blurry', '']
  tokens = pipe.ldm.task.tokenize(prompts)
  want = ref.tokenizer(prompts, padding='max_length', max_length=77, truncation=True).input_ids
  np.testing.assert_array_equal(tokens, np.asarray(want))
  with torch.no_grad():
    ctx_ref = ref.text_encoder(torch.from_numpy(tokens.astype(np.int64)))[0].numpy()
  cond = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, jnp.asarray(tokens))
  assert _max_err(cond['crossattn'], ctx_ref) < TOL

  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  t = np.array([10, 700])
  with torch.no_grad():
    out_ref = _nhwc(
      ref.unet(
        _nchw(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(ctx_ref)
      ).sample
    )
  out = jax.jit(pipe.ldm.model_output)(pipe.params, jnp.asarray(x), jnp.asarray(t), cond)
  assert _max_err(out, out_ref) < TOL * max(1.0, float(np.abs(out_ref).max()))

  latents = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    images_ref = ref(
      prompts, negative_prompt=negative, num_inference_steps=5, guidance_scale=4.0,
      latents=_nchw(latents), output_type='np',
    ).images  # fmt: skip
  images = pipe.sample(
    2, prompt=prompts, negative_prompt=negative, sampler='ddim', steps=5, guidance_scale=4.0,
    latents=latents, return_float=True,
  )  # fmt: skip
  ours = np.clip(images / 2 + 0.5, 0, 1)
  assert images.shape == images_ref.shape == (2, 16, 16, 3)
  assert _max_err(ours, images_ref) < TOL, _max_err(ours, images_ref)


def test_image_to_image(tmp_path):
  """img2img at strength 0 returns the init image through the autoencoder, at 1 ignores it (the
  text-to-image result of the same seed), in between depends on both; any sampler."""
  _sd_pipeline(2, tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  init = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
  kw = dict(prompt='a red house', steps=4, guidance_scale=3.0, return_float=True, seed=7)
  plain = pipe.sample(2, sampler='ddim', **kw)
  zero = pipe.sample(2, sampler='ddim', init_image=init, strength=0.0, **kw)
  np.testing.assert_allclose(
    zero[0], np.asarray(pipe.decode(pipe.encode(init[None])))[0], atol=1e-5
  )
  one = pipe.sample(2, sampler='ddim', init_image=init, strength=1.0, **kw)
  np.testing.assert_array_equal(one, plain)
  for sampler in ('ddim', 'plms', 'dpmpp_2m', 'unipc', 'euler_a'):
    half = pipe.sample(2, sampler=sampler, init_image=init, strength=0.5, **kw)
    assert np.isfinite(half).all() and _max_err(half, zero) > 1e-3 and _max_err(half, plain) > 1e-3
  with pytest.raises(UserError, match='strength'):
    pipe.sample(1, sampler='ddim', init_image=init, strength=1.5, **kw)
  # The init latent's noise level: diffusers' rule (the first step run, t=251 of DDIM's
  # 1/251/501/751 at strength 0.5) or CompVis scripts/img2img.py's (one grid step higher: 501),
  # read off the x_t the model sees first; the same steps run.
  first = {}
  for rule in ('diffusers', 'compvis'):
    seen = []
    cb = lambda t, x, eps, seen=seen: seen.append((int(t), np.asarray(x)))
    pipe.sample(2, sampler='ddim', init_image=init, strength=0.5, img2img_noise=rule,
                callback=cb, **kw)  # fmt: skip
    assert [t for t, _ in seen] == [251, 1]
    first[rule] = seen[0][1]
  abar = np.asarray(pipe.ldm.schedule.alphas_cumprod, np.float64)
  z = np.asarray(pipe.encode(init[None]), np.float64)
  noise = (first['diffusers'] - np.sqrt(abar[251]) * z) / np.sqrt(1 - abar[251])
  np.testing.assert_allclose(
    first['compvis'], np.sqrt(abar[501]) * z + np.sqrt(1 - abar[501]) * noise, atol=1e-4
  )
  with pytest.raises(UserError, match='guidance_scale > 1'):
    pipe.sample(1, prompt='x', negative_prompt='y', guidance_scale=1.0)


def _compvis_checkpoint(version: int = 2, inpainting: bool = False):
  """A tiny SD checkpoint in the CompVis layout: model.diffusion_model.* (CompVis names),
  first_stage_model.*, the text encoder (SD 1: cond_stage_model.transformer.text_model.*, as
  transformers 4 names CLIPTextModel, with its position_ids buffer; SD 2:
  cond_stage_model.model.*, OpenCLIP's text tower), scale_factor. Returns (state dict, the
  diffusers UNet, a function tokens -> the reference context)."""
  unet = _tiny_unet(version, seed=5)
  if inpainting:
    unet = _perturb(diffusers.UNet2DConditionModel(**{**dict(unet.config), 'in_channels': 9}), 9)
  vae = _kl()
  to_np = lambda m: {k: v.detach().numpy() for k, v in m.state_dict().items()}
  sd = unet_to_compvis(to_np(unet), {**unet.config, '_class_name': 'UNet2DConditionModel'})
  sd.update(first_stage_to_compvis(to_np(vae), dict(vae.config)))
  if version == 1:
    text = _tiny_clip(1, seed=6)
    sd.update(clip_text_to_compvis(to_np(text)))
    sd['cond_stage_model.transformer.text_model.embeddings.position_ids'] = np.arange(77)[None]

    def context(tokens):
      with torch.no_grad():
        return text(torch.from_numpy(tokens.astype(np.int64)))[0].numpy()

  else:
    _, oc = _open_clip()
    torch.manual_seed(6)
    text = oc.TextTransformer(
      context_length=77, vocab_size=49408, width=32, heads=4, layers=3, output_dim=32,
      act_layer=torch.nn.GELU,
    ).eval()  # fmt: skip
    with torch.no_grad():
      text.text_projection.normal_(std=32**-0.5)
    sd.update(
      {f'cond_stage_model.model.{k}': v for k, v in to_np(text).items() if k != 'attn_mask'}
    )
    sd['cond_stage_model.model.logit_scale'] = np.asarray(np.log(1 / 0.07), np.float32)

    def context(tokens):  # FrozenOpenCLIPEmbedder, layer='penultimate'
      with torch.no_grad():
        x = (
          text.token_embedding(torch.from_numpy(tokens.astype(np.int64)))
          + text.positional_embedding
        )
        for r in text.transformer.resblocks[:-1]:
          x = r(x, attn_mask=text.attn_mask)
        return text.ln_final(x).numpy()

  sd['scale_factor'] = np.asarray(0.18215, np.float32)
  return sd, unet, context


def _tiny_config(version: int = 2, inpainting: bool = False):
  """configs/sd_finetune.py:tiny (SD 2-shaped), or reshaped as SD 1.x (CLIP quick-GELU last layer,
  8 heads, conv projections, eps), or its inpainting variant."""
  from ldm_jax.configs import sd_finetune

  c = sd_finetune.get_config('tiny_inpainting' if inpainting else 'tiny')
  if version == 1:
    c.cond_stage.update(dict(kind='clip', n_layer=2, act='quick_gelu', layer='last',
                             projection_dim=0, pad_token_id=49407))  # fmt: skip
    c.unet.update(dict(num_heads=4, num_head_channels=-1, use_linear_in_transformer=False))
    c.diffusion.parameterization = 'eps'
  return c


def _tiny_sd2_config():
  return _tiny_config(2)


@pytest.mark.parametrize(
  'version,inpainting,fmt', [(2, False, 'safetensors'), (2, False, 'ckpt'), (1, False, 'ckpt'),
                             (1, True, 'safetensors')]
)  # fmt: skip
def test_compvis_sd_checkpoint_converts_and_samples(version, inpainting, fmt, tmp_path):
  """SD checkpoints (.safetensors or Lightning .ckpt; SD 1, SD 2, SD 1 inpainting) convert with
  their configs; the text encoder equals transformers' CLIPTextModel (SD 1) or OpenCLIP's
  penultimate layer (SD 2), the UNet diffusers' (eps / v); sample.py draws images from each with a
  prompt (and a negative prompt and a non-square size, or the image and mask to inpaint)."""
  from PIL import Image

  sd, unet, context = _compvis_checkpoint(version, inpainting)
  path = str(tmp_path / f'sd.{fmt}')
  if fmt == 'safetensors':
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
  else:
    torch.save({'state_dict': {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()},
                'global_step': 3}, path)  # fmt: skip
  report = convert_compvis(path, _tiny_config(version, inpainting), str(tmp_path / 'out'))
  assert report['stage'] == 'ldm'
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  tokens = pipe.ldm.task.tokenize(['a photograph of an astronaut', ''])
  assert tokens[1, 1] == 49407 and tokens[1, 2] == (0 if version == 2 else 49407)
  ctx_ref = context(tokens)
  z = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype(np.float32)
  tt = np.array([3, 900])
  if inpainting:
    cond = {'tokens': tokens, 'masked_image': np.zeros((2, 16, 16, 3), np.float32),
            'mask': np.ones((2, 16, 16, 1), np.float32)}  # fmt: skip
    cond = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, cond)
    x_in = np.concatenate([z, np.asarray(cond['concat'])], axis=-1)
  else:
    cond = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, jnp.asarray(tokens))
    x_in = z
  assert _max_err(cond['crossattn'], ctx_ref) < TOL
  with torch.no_grad():
    ref = unet(_nchw(x_in), torch.from_numpy(tt), encoder_hidden_states=torch.from_numpy(ctx_ref))
  ref = _nhwc(ref.sample)
  out = jax.jit(pipe.ldm.model_output)(pipe.params, jnp.asarray(z), jnp.asarray(tt), cond)
  assert _max_err(out, ref) < TOL * max(1.0, float(np.abs(ref).max()))

  if fmt == 'safetensors' and not inpainting:
    return
  out = tmp_path / 'samples'
  args = ['--prompt=a red house', '--guidance_scale=5', '--num_samples=2', '--steps=3']
  if inpainting:
    Image.fromarray(np.full((16, 24, 3), 90, np.uint8)).save(tmp_path / 'image.png')
    mask = np.zeros((16, 24), np.uint8)
    mask[4:12, 4:20] = 255
    Image.fromarray(mask).save(tmp_path / 'mask.png')
    args += [f'--image={tmp_path / "image.png"}', f'--mask={tmp_path / "mask.png"}']
  else:
    args += ['--negative_prompt=blurry', '--height=16', '--width=24']
  cmd = [sys.executable, os.path.join(ROOT, 'sample.py'), f'--workdir={tmp_path / "out"}',
         f'--outdir={out}', '--batch_size=8', *args]  # fmt: skip
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  images = np.load(out / 'samples.npz')['images']
  assert images.shape == (2, 16, 24, 3) and images.std() > 0


def test_sd_inpainting_equals_diffusers(tmp_path):
  """A StableDiffusionInpaintPipeline folder (9-channel UNet) converts to the text_inpainting task
  and a guided DDIM run equals diffusers' from the same latents (the masked image's latent given
  to both: the posterior mode here, which the reference draws at random)."""
  from PIL import Image

  ref = _sd_pipeline(1, tmp_path / 'pipe', inpainting=True)
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  assert pipe.config.task == 'text_inpainting' and pipe.ldm.guidable

  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
  mask = np.zeros((16, 16), np.uint8)
  mask[4:12, 2:10] = 255
  masked = (image.astype(np.float32) / 127.5 - 1) * (mask[..., None] < 128)
  z_masked = np.asarray(pipe.encode(masked[None]))  # mode x scale factor, as the task encodes
  latents = rng.normal(size=(1, 8, 8, 4)).astype(np.float32)
  with torch.no_grad():
    want = ref(
      'a red sofa', image=Image.fromarray(image), mask_image=Image.fromarray(mask, 'L'),
      masked_image_latents=_nchw(z_masked), num_inference_steps=4, guidance_scale=3.0,
      latents=_nchw(latents), output_type='np',
    ).images  # fmt: skip
  got = pipe.sample(
    1, prompt='a red sofa', image=image, mask=mask[..., None], sampler='ddim', steps=4,
    guidance_scale=3.0, latents=latents, return_float=True,
  )  # fmt: skip
  assert _max_err(np.clip(got / 2 + 0.5, 0, 1), want) < TOL


def test_tiny_sd_fine_tunes_resumes_bitwise_and_samples(tmp_path):
  """configs/sd_finetune.py:tiny from converted random SD 2.x weights (init_from) on the digits'
  captions: the text encoder stays as converted, the UNet moves; a run SIGTERMed at step 3 and
  relaunched equals an uninterrupted one bitwise; the result samples from a prompt."""
  import signal
  import time

  from safetensors.numpy import save_file

  from ldm_jax.checkpoint import load_raw
  from tests.helpers import run_cli

  sd, _, _ = _compvis_checkpoint(2)
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(tmp_path / 'sd2.safetensors'))
  convert_compvis(str(tmp_path / 'sd2.safetensors'), _tiny_sd2_config(), str(tmp_path / 'base'))
  args = lambda wd, n: [
    'train.py', '--config=configs/sd_finetune.py:tiny', f'--workdir={wd}',
    f'--config.training.init_from={tmp_path / "base"}', f'--config.training.num_steps={n}',
    '--config.training.checkpoint_every=100', '--config.training.log_every=1',
  ]  # fmt: skip
  r = run_cli(*args(tmp_path / 'straight', 6))
  assert r.returncode == 0, r.stderr[-3000:]
  assert f'initialised from {tmp_path / "base"}' in r.stderr

  proc = subprocess.Popen(
    [sys.executable, *args(tmp_path / 'stopped', 100_000)], cwd=ROOT, stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE, text=True,
  )  # fmt: skip
  seen, deadline = '', time.time() + 600
  while time.time() < deadline:
    line = proc.stderr.readline()
    seen += line
    if 'step 3/' in line or not line:
      break
  proc.send_signal(signal.SIGTERM)
  seen += proc.communicate(timeout=300)[1]
  assert proc.returncode == 0, seen[-3000:]
  stop = int(seen.split('checkpoint saved at step ')[1].split()[0])
  assert 3 <= stop < 6
  r = run_cli(*args(tmp_path / 'stopped', 6))
  assert r.returncode == 0 and f'at step {stop}' in r.stderr, r.stderr[-3000:]

  _, _, base, _ = load_raw(str(tmp_path / 'base'))
  (_, s1, a, _), (_, s2, b, _) = (
    load_raw(str(tmp_path / 'straight')),
    load_raw(str(tmp_path / 'stopped')),
  )
  assert s1 == s2 == 6
  for x, y in zip(jax.tree.leaves(a['params']), jax.tree.leaves(b['params'])):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(
    jax.tree.leaves(a['params']['cond_stage']), jax.tree.leaves(base['params']['cond_stage'])
  ):
    np.testing.assert_array_equal(x, y)  # frozen
  moved = [
    float(np.abs(x - y).max())
    for x, y in zip(jax.tree.leaves(a['params']['unet']), jax.tree.leaves(base['params']['unet']))
  ]
  assert max(moved) > 0
  images = ldm_jax.load(str(tmp_path / 'stopped')).sample(2, prompt='a handwritten digit seven')
  assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
