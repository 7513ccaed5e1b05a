"""SDXL: the released layouts at the reference's parameter counts, and tiny random-weight SDXL base
and refiner pipelines (diffusers folders) against diffusers' StableDiffusionXLPipeline: tokens, both
text encoders (penultimate states and the pooled embedding), the UNet with its vector input, and
whole guided runs from the same starting latents."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')
transformers = pytest.importorskip('transformers')

import ldm_jax  # noqa: E402
from ldm_jax.configs.released import sdxl_base, sdxl_refiner  # noqa: E402
from ldm_jax.convert.diffusers import convert_diffusers, unet_to_compvis  # noqa: E402
from ldm_jax.convert.sdxl import _text_keys  # noqa: E402
from ldm_jax.latent_diffusion import abstract_params  # noqa: E402
from ldm_jax.nn.params import count_params  # noqa: E402
from tests.test_architecture import assert_maps_one_to_one  # noqa: E402
from tests.test_convert_diffusers import _kl, _max_err, _nchw, _nhwc, _perturb  # noqa: E402
from tests.test_stable_diffusion import _write_tokenizer  # noqa: E402

TOL = 1e-4


def _sdxl_unet_config(refiner: bool) -> dict:
  """diffusers' unet/config.json of SDXL 1.0 base / refiner."""
  common = dict(in_channels=4, out_channels=4, layers_per_block=2)
  if refiner:
    return dict(**common, sample_size=128, block_out_channels=(384, 768, 1536, 1536),
                down_block_types=('DownBlock2D',) + ('CrossAttnDownBlock2D',) * 2 + ('DownBlock2D',),
                up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 2 + ('UpBlock2D',),
                attention_head_dim=(6, 12, 24, 24), transformer_layers_per_block=4,
                cross_attention_dim=1280, projection_class_embeddings_input_dim=2560,
                use_linear_projection=True, addition_embed_type='text_time',
                addition_time_embed_dim=256)  # fmt: skip
  return dict(**common, sample_size=128, block_out_channels=(320, 640, 1280),
              down_block_types=('DownBlock2D',) + ('CrossAttnDownBlock2D',) * 2,
              up_block_types=('CrossAttnUpBlock2D',) * 2 + ('UpBlock2D',),
              attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
              cross_attention_dim=2048, projection_class_embeddings_input_dim=2816,
              use_linear_projection=True, addition_embed_type='text_time',
              addition_time_embed_dim=256)  # fmt: skip


def _text_config(width, layers, heads, act, **extra):
  return transformers.CLIPTextConfig(
    vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
    num_attention_heads=heads, max_position_embeddings=77, hidden_act=act, **extra,
  )  # fmt: skip


@pytest.mark.parametrize(
  'module,refiner,unet_count,text_counts',
  [
    (sdxl_base, False, 2_567_463_684, (123_060_480, 694_659_840)),
    (sdxl_refiner, True, 2_259_526_660, (694_659_840,)),
  ],
)
def test_sdxl_configs_equal_reference_models(module, refiner, unet_count, text_counts):
  """Every parameter of diffusers' SDXL UNet and of transformers' CLIPTextModel (ViT-L/14) and
  CLIPTextModelWithProjection (ViT-bigG/14), built at the SDXL 1.0 layouts on the meta device,
  has one leaf of the right shape here and the reverse (+ OpenCLIP's logit_scale, which
  transformers does not hold); the counts are the issue's; the autoencoder is kl-f8's."""
  shapes = abstract_params(module.get_config())
  cfg = _sdxl_unet_config(refiner)
  with torch.device('meta'):
    unet = diffusers.UNet2DConditionModel(**cfg)
    texts = [] if refiner else [transformers.CLIPTextModel(_text_config(768, 12, 12, 'quick_gelu'))]
    texts.append(transformers.CLIPTextModelWithProjection(
      _text_config(1280, 32, 20, 'gelu', projection_dim=1280)))  # fmt: skip
  rows = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
  names = unet_to_compvis({k: k for k in rows}, {**cfg, '_class_name': 'UNet2DConditionModel'}, '')
  assert_maps_one_to_one(shapes['unet'], [(ours, rows[theirs]) for ours, theirs in names.items()])
  assert count_params(shapes['unet']) == sum(int(np.prod(s)) for s in rows.values()) == unet_count
  cond_rows = []
  for i, (text, want) in enumerate(zip(texts, text_counts)):
    sd = {k: np.empty(v.shape, np.int8) for k, v in text.state_dict().items()}
    assert sum(int(np.prod(v.shape)) for k, v in sd.items() if 'position_ids' not in k) == want
    child = 'model' if i == len(texts) - 1 else 'transformer'
    cond_rows += [(k, v.shape) for k, v in _text_keys(sd, f'embedders.{i}.{child}.').items()]
  cond_rows.append((f'embedders.{len(texts) - 1}.model.logit_scale', ()))
  assert_maps_one_to_one(shapes['cond_stage'], cond_rows)
  assert count_params(shapes['first_stage']) == 83_653_863


def _tiny_unet(refiner: bool, seed=3):
  cfg = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
    layers_per_block=1, down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'),
    up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'), attention_head_dim=(2, 4),
    use_linear_projection=True, norm_num_groups=32,
    cross_attention_dim=32 if refiner else 64, transformer_layers_per_block=2 if refiner else (1, 2),
    addition_embed_type='text_time', addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=32 + (5 if refiner else 6) * 8,
  )  # fmt: skip
  return _perturb(diffusers.UNet2DConditionModel(**cfg), seed)


def _tiny_text(cls, act, seed, **extra):
  cfg = transformers.CLIPTextConfig(
    vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=3,
    num_attention_heads=4, max_position_embeddings=77, hidden_act=act, **extra,
  )  # fmt: skip
  torch.manual_seed(seed)
  return _perturb(cls(cfg), seed)


def _sdxl_pipeline(folder, refiner=False, scheduler=None):
  """A tiny StableDiffusionXL(Img2Img)Pipeline saved as the SDXL repositories hold it."""
  tok = {}
  for name, pad in (('tokenizer', '<|endoftext|>'), ('tokenizer_2', '!')):
    _write_tokenizer(f'{folder}_{name}', pad)
    tok[name] = transformers.CLIPTokenizer.from_pretrained(f'{folder}_{name}')
  text_2 = _tiny_text(transformers.CLIPTextModelWithProjection, 'gelu', 5, projection_dim=32)
  scheduler = scheduler or diffusers.DDIMScheduler(
    beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', clip_sample=False,
    set_alpha_to_one=False, steps_offset=1,
  )  # fmt: skip
  common = dict(vae=_kl(), text_encoder_2=text_2, tokenizer_2=tok['tokenizer_2'],
                unet=_tiny_unet(refiner), scheduler=scheduler)  # fmt: skip
  if refiner:
    pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
      text_encoder=None, tokenizer=None, requires_aesthetics_score=True,
      force_zeros_for_empty_prompt=False, **common,
    )  # fmt: skip
  else:
    text = _tiny_text(transformers.CLIPTextModel, 'quick_gelu', 4)
    pipe = diffusers.StableDiffusionXLPipeline(
      text_encoder=text, tokenizer=tok['tokenizer'], **common
    )
  pipe.set_progress_bar_config(disable=True)
  pipe.save_pretrained(str(folder), safe_serialization=True)
  return pipe


def test_sdxl_base_equals_diffusers(tmp_path):
  """A diffusers SDXL base folder converts and gives diffusers' own results: tokens of both
  tokenizers, the context (both encoders' penultimate states) and pooled embedding, the UNet's
  output with the vector input, and whole guided DDIM runs (the zeroed unconditional input, and a
  negative prompt) with non-default size conditioning."""
  ref = _sdxl_pipeline(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  cs, u = pipe.config.cond_stage, pipe.config.unet
  assert (cs.kind, cs.first_encoder.embed_dim, cs.pad_token_id, cs.zeros_for_empty_prompt) == (
    'sdxl', 32, 0, True
  )  # fmt: skip
  assert (u.adm_in_channels, tuple(u.transformer_depths), u.context_dim) == (80, (0, 2), 64)

  prompts = ['a photograph of an astronaut riding a horse', 'an oil painting of a tree']
  cond = pipe.ldm.task.user_condition(2, prompts)[0]
  cond = pipe.ldm.task.finish_condition(cond, 16, 16)
  for i, t in enumerate((ref.tokenizer, ref.tokenizer_2)):
    want = t(prompts, padding='max_length', max_length=77, truncation=True).input_ids
    np.testing.assert_array_equal(cond['tokens'][:, i], np.asarray(want))
  with torch.no_grad():
    ctx_ref, _, pooled_ref, _ = ref.encode_prompt(prompts, do_classifier_free_guidance=False)
  c = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, cond)
  assert _max_err(c['crossattn'], ctx_ref.numpy()) < TOL
  assert _max_err(c['vector'][:, :32], pooled_ref.numpy()) < TOL

  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  t = np.array([10, 700])
  time_ids = torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * 2)
  with torch.no_grad():
    out_ref = ref.unet(
      _nchw(x), torch.from_numpy(t), encoder_hidden_states=ctx_ref,
      added_cond_kwargs={'text_embeds': pooled_ref, 'time_ids': time_ids},
    ).sample  # fmt: skip
  out = jax.jit(pipe.ldm.model_output)(pipe.params, jnp.asarray(x), jnp.asarray(t), c)
  ref_out = _nhwc(out_ref)
  assert _max_err(out, ref_out) < TOL * max(1.0, float(np.abs(ref_out).max()))

  latents = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  sizes = dict(original_size=(24, 32), crops_coords_top_left=(4, 2))
  for negative in (None, ['blurry', 'dark']):
    with torch.no_grad():
      images_ref = ref(
        prompts, negative_prompt=negative, num_inference_steps=5, guidance_scale=4.0,
        latents=_nchw(latents), output_type='np', height=16, width=16, **sizes,
      ).images  # fmt: skip
    images = pipe.sample(
      2, prompt=prompts, negative_prompt=negative, sampler='ddim', steps=5, guidance_scale=4.0,
      latents=latents, return_float=True, height=16, width=16, **sizes,
    )  # fmt: skip
    ours = np.clip(images / 2 + 0.5, 0, 1)
    assert ours.shape == images_ref.shape == (2, 16, 16, 3)
    assert _max_err(ours, images_ref) < TOL, (negative, _max_err(ours, images_ref))


def test_sdxl_refiner_equals_diffusers(tmp_path):
  """The refiner (bigG alone, aesthetic scores, the empty prompt as the unconditional input):
  its context, pooled embedding and UNet output for a prompt at aesthetic score 7 and for the
  unconditional input (the empty prompt at the negative score 2.5) equal diffusers'."""
  ref = _sdxl_pipeline(tmp_path / 'pipe', refiner=True)
  with open(tmp_path / 'pipe' / 'model_index.json') as f:
    assert json.load(f)['text_encoder'] == [None, None]
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  assert os.path.isdir(tmp_path / 'out' / 'tokenizer_2')
  pipe = ldm_jax.load(str(tmp_path / 'out'))
  cs, task = pipe.config.cond_stage, pipe.ldm.task
  assert (cs.first_encoder.embed_dim, cs.zeros_for_empty_prompt) == (0, False)
  assert cs.micro_conditioning.endswith('aesthetic_score')

  prompts = ['a red house', 'a blue boat']
  cond = task.finish_condition(task.user_condition(2, prompts, aesthetic_score=7.0)[0], 16, 16)
  with torch.no_grad():
    ctx, neg, pooled, neg_pooled = ref.encode_prompt(prompts, do_classifier_free_guidance=True)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
  t = np.array([30, 600])
  fn = jax.jit(lambda c: pipe.ldm.model_output(pipe.params, jnp.asarray(x), jnp.asarray(t), c))
  for ours, (c_ref, p_ref, score) in (
    (cond, (ctx, pooled, 7.0)),
    (task.null_condition(cond), (neg, neg_pooled, 2.5)),
  ):
    c = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, ours)
    assert _max_err(c['crossattn'], c_ref.numpy()) < TOL
    assert _max_err(c['vector'][:, :32], p_ref.numpy()) < TOL
    time_ids = torch.tensor([[16.0, 16.0, 0.0, 0.0, score]] * 2)
    with torch.no_grad():
      out_ref = ref.unet(
        _nchw(x), torch.from_numpy(t), encoder_hidden_states=c_ref,
        added_cond_kwargs={'text_embeds': p_ref, 'time_ids': time_ids},
      ).sample  # fmt: skip
    out_ref = _nhwc(out_ref)
    assert _max_err(fn(c), out_ref) < TOL * max(1.0, float(np.abs(out_ref).max()))


def _generative_models_checkpoint(ref, path):
  """The tiny base in generative-models' layout (sd_xl_base_1.0.safetensors): the UNet and first
  stage in CompVis names, ``conditioner.embedders.0.transformer.*`` (transformers' CLIPTextModel),
  ``conditioner.embedders.1.model.*`` (OpenCLIP's names, q/k/v stacked), ``denoiser.sigmas``."""
  from safetensors.numpy import save_file

  from ldm_jax.convert.clip_names import hf_text_to_openclip
  from ldm_jax.convert.diffusers import first_stage_to_compvis

  to_np = lambda m: {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
  unet_cfg = {**ref.unet.config, '_class_name': 'UNet2DConditionModel'}
  sd = {
    **unet_to_compvis(to_np(ref.unet), unet_cfg),
    **first_stage_to_compvis(to_np(ref.vae), ref.vae.config),
  }
  sd.update(_text_keys(to_np(ref.text_encoder), 'conditioner.embedders.0.transformer.'))
  big = _text_keys(to_np(ref.text_encoder_2), 'conditioner.embedders.1.model.')
  big = hf_text_to_openclip(big, 'conditioner.embedders.1.model.')
  big = {k.replace('model.text_model.', 'model.'): v for k, v in big.items()}
  big['conditioner.embedders.1.model.logit_scale'] = np.float32(np.log(100.0)).reshape(())
  sd.update(big)
  abar = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
  sd['denoiser.sigmas'] = np.sqrt((1 - abar) / abar).astype(np.float32)
  save_file({k: np.ascontiguousarray(v, np.float32) for k, v in sd.items()}, str(path))


def test_sdxl_generative_models_checkpoint_converts_like_the_diffusers_folder(tmp_path):
  """The same tiny base in generative-models' checkpoint layout converts (python -m
  ldm_jax.convert compvis) to exactly the parameters of its diffusers folder."""
  from ldm_jax.convert.compvis import convert_compvis

  ref = _sdxl_pipeline(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  a = ldm_jax.load(str(tmp_path / 'out'))
  _generative_models_checkpoint(ref, tmp_path / 'sdxl.safetensors')
  report = convert_compvis(str(tmp_path / 'sdxl.safetensors'), a.config, str(tmp_path / 'gm'))
  assert report['ignored'] == []  # and every key was placed (else convert_compvis raises)
  b = ldm_jax.load(str(tmp_path / 'gm'))
  pairs = zip(jax.tree.leaves_with_path(a.params), jax.tree.leaves_with_path(b.params))
  for (path, x), (_, y) in pairs:
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
  assert float(b.scale_factor) == float(a.scale_factor)


def test_sdxl_exports_both_formats_tensor_for_tensor(tmp_path):
  """A converted SDXL base written back: ``--format=diffusers`` is a folder that
  ``StableDiffusionXLPipeline.from_pretrained`` loads with every tensor equal to the original
  pipeline's (and the same images), ``--format=compvis`` the generative-models state dict, every
  tensor equal to the checkpoint it came from; the refiner's folder loads as the Img2Img one."""
  from safetensors.numpy import load_file

  from ldm_jax.export.compvis import export_workdir
  from ldm_jax.export.diffusers import export_diffusers

  ref = _sdxl_pipeline(tmp_path / 'pipe')
  _generative_models_checkpoint(ref, tmp_path / 'sdxl.safetensors')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'out'))
  export_diffusers(str(tmp_path / 'out'), str(tmp_path / 'back'))
  back = diffusers.StableDiffusionXLPipeline.from_pretrained(str(tmp_path / 'back'))
  assert back.config.force_zeros_for_empty_prompt is True
  for part in ('unet', 'vae', 'text_encoder', 'text_encoder_2'):
    want, got = getattr(ref, part).state_dict(), getattr(back, part).state_dict()
    assert set(want) == set(got), part
    for k in want:
      np.testing.assert_array_equal(want[k].numpy(), got[k].numpy(), err_msg=f'{part}.{k}')
  prompt = ['a cat', 'a dog']
  assert back.tokenizer_2(prompt).input_ids == ref.tokenizer_2(prompt).input_ids

  export_workdir(str(tmp_path / 'out'), str(tmp_path / 'back.safetensors'))
  want, got = (
    load_file(str(tmp_path / 'sdxl.safetensors')),
    load_file(str(tmp_path / 'back.safetensors')),
  )
  assert set(want) == set(got)
  for k in want:  # parameters exactly; the schedule's sigmas as float32 computes them
    if k == 'denoiser.sigmas':
      np.testing.assert_allclose(got[k], want[k], rtol=1e-4)
    else:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)

  ref = _sdxl_pipeline(tmp_path / 'rpipe', refiner=True)
  convert_diffusers(str(tmp_path / 'rpipe'), str(tmp_path / 'rout'))
  export_diffusers(str(tmp_path / 'rout'), str(tmp_path / 'rback'))
  back = diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(str(tmp_path / 'rback'))
  assert back.text_encoder is None and back.config.requires_aesthetics_score
  for k, v in ref.text_encoder_2.state_dict().items():
    np.testing.assert_array_equal(v.numpy(), back.text_encoder_2.state_dict()[k].numpy(), err_msg=k)


def test_tiny_sdxl_fine_tunes_and_resumes(tmp_path):
  """configs/sd_finetune.py:tiny_sdxl from the converted tiny SDXL base on the digits' captions
  (size conditioning from each image, 10% of captions zeroed): a run of 2 steps, then a relaunch
  to 3 that resumes at step 2; both text encoders stay as converted, the UNet moves; the result
  samples from a prompt with size conditioning. (Bitwise resume of every recipe: test_recipes.)"""
  from ldm_jax.checkpoint import load_raw
  from ldm_jax.configs import sd_finetune
  from ldm_jax.train.loop import train

  _sdxl_pipeline(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'base'))
  wd = tmp_path / 'ft'
  for n in (2, 3):  # in process (the CLI's config path is test_train_tasks'); the 2nd resumes
    c = sd_finetune.get_config('tiny_sdxl')
    c.training.update(dict(init_from=str(tmp_path / 'base'), num_steps=n, checkpoint_every=2))
    state = train(c, str(wd))
    assert int(state.step) == n
  _, _, base, _ = load_raw(str(tmp_path / 'base'))
  _, step, a, _ = load_raw(str(wd))
  assert step == 3
  pairs = zip(
    jax.tree.leaves(a['params']['cond_stage']), jax.tree.leaves(base['params']['cond_stage'])
  )
  for x, y in pairs:
    np.testing.assert_array_equal(x, y)  # frozen
  unet = zip(jax.tree.leaves(a['params']['unet']), jax.tree.leaves(base['params']['unet']))
  assert max(float(np.abs(x - y).max()) for x, y in unet) > 0
  pipe = ldm_jax.load(str(wd))
  images = pipe.sample(2, prompt='a handwritten digit seven', original_size=(32, 32))
  assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8


def test_sdxl_base_to_refiner_hand_off_equals_diffusers(tmp_path):
  """The base stops at 60% of the schedule (denoising_end, latents out) and the refiner runs the
  rest from those latents (denoising_start), as diffusers' ensemble of expert denoisers, with DDIM
  and with Euler: the latents at the hand-off equal diffusers' (Euler's: diffusers' variance-
  exploding ones over sqrt(1 + sigma^2)), and the refiner's images from each side's latents agree."""
  base_ref = _sdxl_pipeline(tmp_path / 'base')
  refiner_ref = _sdxl_pipeline(tmp_path / 'refiner', refiner=True)
  for name in ('base', 'refiner'):
    convert_diffusers(str(tmp_path / name), str(tmp_path / f'{name}_out'))
  base, refiner = (ldm_jax.load(str(tmp_path / f'{n}_out')) for n in ('base', 'refiner'))
  prompts = ['a red house by a lake', 'a blue boat']
  noise = np.random.default_rng(3).normal(size=(2, 8, 8, 4)).astype(np.float32)
  kw = dict(num_inference_steps=5, guidance_scale=3.0)
  for sampler in ('ddim', 'euler'):
    ours_kw = dict(sampler=sampler, steps=5, guidance_scale=3.0)
    if sampler == 'euler':
      ours_kw['spacing'] = 'leading'
      for ref in (base_ref, refiner_ref):
        ref.scheduler = diffusers.EulerDiscreteScheduler(
          beta_start=0.00085, beta_end=0.012, beta_schedule='scaled_linear', steps_offset=1,
          timestep_spacing='leading',
        )  # fmt: skip
    with torch.no_grad():
      lat_ref = base_ref(prompts, latents=_nchw(noise), denoising_end=0.6, output_type='latent',
                         height=16, width=16, **kw).images  # fmt: skip
      s = base_ref.scheduler
      sigma = float(s.sigmas[s.step_index]) if sampler == 'euler' else 0.0
    lat = base.sample(2, prompt=prompts, latents=noise, denoising_end=0.6, return_latents=True,
                      **ours_kw)  # fmt: skip
    assert lat.shape == (2, 8, 8, 4)
    want = _nhwc(lat_ref) / np.sqrt(1 + sigma**2)
    assert _max_err(lat, want) < TOL * max(1.0, float(np.abs(want).max())), sampler
    with torch.no_grad():
      images_ref = refiner_ref(prompts, image=lat_ref, denoising_start=0.6, output_type='np',
                               **kw).images  # fmt: skip
    images = refiner.sample(2, prompt=prompts, latents=lat, denoising_start=0.6,
                            return_float=True, **ours_kw)  # fmt: skip
    ours = np.clip(images / 2 + 0.5, 0, 1)
    assert ours.shape == images_ref.shape == (2, 16, 16, 3)
    assert _max_err(ours, images_ref) < TOL, (sampler, _max_err(ours, images_ref))


def test_sdxl_lora_trains_exports_and_loads_in_diffusers(tmp_path):
  """configs/lora.py:tiny_sdxl with adapters on the UNet's attention and both text encoders: 3
  steps from the converted tiny base; the exported PEFT file loaded by diffusers'
  StableDiffusionXLPipeline.load_lora_weights (text_encoder and text_encoder_2 included) gives the
  run's images from the same latents, and the kohya file (lora_te1_/lora_te2_) loaded back onto
  the base by ldm_jax gives them too."""
  from ldm_jax.configs import lora
  from ldm_jax.export.lora import export_lora
  from ldm_jax.train.loop import train

  ref = _sdxl_pipeline(tmp_path / 'pipe')
  convert_diffusers(str(tmp_path / 'pipe'), str(tmp_path / 'base'))
  c = lora.get_config('tiny_sdxl')
  c.training.update(dict(init_from=str(tmp_path / 'base'), num_steps=3))
  c.lora.targets = 'attn,text'
  c.optimizer.base_learning_rate = 0.02
  train(c, str(tmp_path / 'lora'))
  for fmt in ('lora-diffusers', 'lora-kohya'):
    export_lora(str(tmp_path / 'lora'), str(tmp_path / f'{fmt}.safetensors'), fmt)
  run = ldm_jax.load(str(tmp_path / 'lora'))
  prompts = ['a red house', 'a blue boat']
  latents = np.random.default_rng(4).normal(size=(2, 8, 8, 4)).astype(np.float32)
  kw = dict(prompt=prompts, sampler='ddim', steps=4, guidance_scale=3.0, latents=latents,
            return_float=True)  # fmt: skip
  ours = run.sample(2, **kw)
  base = ldm_jax.load(str(tmp_path / 'base')).sample(2, **kw)
  assert _max_err(ours, base) > 1e-2  # the adapters change the images
  ref.load_lora_weights(str(tmp_path / 'lora-diffusers.safetensors'))
  with torch.no_grad():
    images_ref = ref(prompts, num_inference_steps=4, guidance_scale=3.0, latents=_nchw(latents),
                     output_type='np', height=16, width=16).images  # fmt: skip
  assert _max_err(np.clip(ours / 2 + 0.5, 0, 1), images_ref) < TOL
  kohya = ldm_jax.load(str(tmp_path / 'base'), lora=str(tmp_path / 'lora-kohya.safetensors'))
  assert _max_err(kohya.sample(2, **kw), ours) < TOL
