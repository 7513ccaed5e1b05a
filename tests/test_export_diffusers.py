"""python -m ldm_jax.export --format=diffusers: the folder loads in diffusers
(DiffusionPipeline.from_pretrained) and gives what the model gives in ldm_jax.

- diffusers pipelines (tests/test_convert_diffusers.py's tiny ones) -> convert -> export: every
  component equals the original, tensor for tensor, and computes the same outputs (the configs
  written are the architecture, head split included); converting the export back gives the
  same parameters.
- Stable Diffusion 1 and 2 folders: the exported pipeline's guided DDIM images equal the original's.
- models made here: an SD 2 CompVis checkpoint (OpenCLIP text tower, penultimate layer) exports to
  diffusers' 23-layer CLIPTextModel; an unconditional KL LDM with a scale factor samples in
  diffusers' LDMPipeline to ldm_jax's DDIM images; a class-conditional one is refused by name.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')

import ldm_jax  # noqa: E402
from ldm_jax.convert.diffusers import convert_diffusers  # noqa: E402
from ldm_jax.export.diffusers import export_diffusers  # noqa: E402
from tests.helpers import ROOT, compvis_ldm_state_dict, run_cli, user_error  # noqa: E402
from tests.test_convert_diffusers import (  # noqa: E402
  TOL,
  _ddim,
  _kl,
  _max_err,
  _nchw,
  _nhwc,
  _perturb,
  _vq,
  _write_pipeline,
)


def _same_tensors(a, b):
  sa, sb = a.state_dict(), b.state_dict()
  assert sorted(sa) == sorted(sb)
  for k in sa:
    np.testing.assert_array_equal(sa[k].numpy(), sb[k].numpy(), err_msg=k)


def _params_equal(a, b):
  la, lb = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
  assert [p for p, _ in la] == [p for p, _ in lb]
  for (path, x), (_, y) in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def _round_trip(tmp_path, pipe_dir):
  """convert -> export -> (the loaded diffusers pipeline, our model, and the re-converted one)."""
  convert_diffusers(str(pipe_dir), str(tmp_path / 'run'))
  r = run_cli(
    '-m', 'ldm_jax.export', f'--workdir={tmp_path / "run"}', '--format=diffusers',
    f'--out={tmp_path / "exported"}',
  )  # fmt: skip
  assert r.returncode == 0, r.stderr[-3000:]
  loaded = diffusers.DiffusionPipeline.from_pretrained(str(tmp_path / 'exported'))
  convert_diffusers(str(tmp_path / 'exported'), str(tmp_path / 'again'))
  ours, again = ldm_jax.load(str(tmp_path / 'run')), ldm_jax.load(str(tmp_path / 'again'))
  _params_equal(again.params, ours.params)
  _params_equal(again.first_stage_params, ours.first_stage_params)
  return loaded, ours


@pytest.mark.parametrize('variant', ['churches_like', 'superres'])
def test_unet2d_pipelines_export_to_the_same_diffusers_models(variant, tmp_path):
  in_ch = 6 if variant == 'superres' else 3
  kwargs = dict(
    sample_size=8, in_channels=in_ch, out_channels=3, block_out_channels=(32, 64),
    layers_per_block=2, norm_num_groups=32,
  )  # fmt: skip
  if variant == 'churches_like':  # scale-shift norm, resblock up/down, heads of 16 everywhere
    kwargs.update(
      down_block_types=('AttnDownBlock2D', 'AttnDownBlock2D'),
      up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D'),
      resnet_time_scale_shift='scale_shift', downsample_type='resnet', upsample_type='resnet',
      attention_head_dim=16, attn_norm_num_groups=32,
    )  # fmt: skip
  else:
    kwargs.update(
      down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
      up_block_types=('AttnUpBlock2D', 'UpBlock2D'),
      attention_head_dim=None,
    )
  unet, vq = _perturb(diffusers.UNet2DModel(**kwargs), 0), _vq()
  cls = 'LDMSuperResolutionPipeline' if variant == 'superres' else 'LDMPipeline'
  _write_pipeline(str(tmp_path / 'pipe'), cls, {'unet': unet, 'vqvae': vq}, _ddim())
  loaded, _ = _round_trip(tmp_path, tmp_path / 'pipe')
  assert type(loaded).__name__ == cls
  _same_tensors(loaded.unet, unet)
  _same_tensors(loaded.vqvae, vq)
  x = np.random.default_rng(0).normal(size=(2, 8, 8, in_ch)).astype(np.float32)
  t = torch.tensor([3, 917])
  with torch.no_grad():
    want, got = unet(_nchw(x), t).sample, loaded.unet(_nchw(x), t).sample
  np.testing.assert_array_equal(got.numpy(), want.numpy())
  assert loaded.scheduler.config.steps_offset == 1 and loaded.scheduler.config.beta_end == 0.0195


def test_ldm_text_pipeline_exports_with_its_bert_and_tokenizer(tmp_path):
  from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import (
    LDMBertConfig,
    LDMBertModel,
  )

  from tests.test_convert_diffusers import _write_bert_tokenizer

  unet = _perturb(
    diffusers.UNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
      layers_per_block=1, down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
      up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=32,
      attention_head_dim=4, norm_num_groups=32,
    ),
    3,
  )  # fmt: skip
  bert = _perturb(
    LDMBertModel(
      LDMBertConfig(
        vocab_size=30522, max_position_embeddings=77, encoder_layers=2, d_model=32,
        encoder_ffn_dim=128, encoder_attention_heads=8, head_dim=64, dropout=0.0,
      )
    ),
    4,
  )  # fmt: skip
  vae = _kl()
  parts = {'unet': unet, 'vqvae': vae, 'bert': bert}
  _write_pipeline(str(tmp_path / 'pipe'), 'LDMTextToImagePipeline', parts, _ddim(0.00085, 0.012))
  _write_bert_tokenizer(tmp_path / 'pipe')
  loaded, _ = _round_trip(tmp_path, tmp_path / 'pipe')
  assert type(loaded).__name__ == 'LDMTextToImagePipeline'
  for name, model in parts.items():
    _same_tensors(getattr(loaded, name), model)
  assert loaded.vqvae.config.scaling_factor == pytest.approx(0.18215)
  prompt = ['a painting of a tree']
  ids = loaded.tokenizer(prompt, padding='max_length', max_length=77).input_ids
  assert ids[0][:2] == [101, 1037] and ids[0][-1] == 0  # [CLS] a ... [PAD]
  tokens = torch.tensor(ids)
  with torch.no_grad():
    np.testing.assert_array_equal(loaded.bert(tokens)[0].numpy(), bert(tokens)[0].numpy())


@pytest.mark.parametrize('version,inpainting', [(1, False), (2, False), (1, True)])
def test_stable_diffusion_folders_export_to_the_same_pipeline(version, inpainting, tmp_path):
  from tests.test_stable_diffusion import _sd_pipeline

  ref = _sd_pipeline(version, tmp_path / 'pipe', inpainting)
  loaded, _ = _round_trip(tmp_path, tmp_path / 'pipe')
  assert type(loaded) is type(ref)
  for name in ('unet', 'vae', 'text_encoder'):
    _same_tensors(getattr(loaded, name), getattr(ref, name))
  loaded.set_progress_bar_config(disable=True)
  prompts, negative = ['an astronaut riding a horse', 'a tree, by monet'], ['blurry', '']
  rng = np.random.default_rng(0)
  latents = _nchw(rng.normal(size=(2, 8, 8, 4)).astype(np.float32))
  run = dict(negative_prompt=negative, num_inference_steps=3, guidance_scale=4.0, output_type='np')
  if inpainting:
    from PIL import Image

    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 2:10] = 255
    run.update(
      image=Image.fromarray(rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)),
      mask_image=Image.fromarray(mask, 'L'),
    )
  with torch.no_grad():
    want = ref(prompts, latents=latents, generator=torch.Generator().manual_seed(0), **run)
    got = loaded(prompts, latents=latents, generator=torch.Generator().manual_seed(0), **run)
  np.testing.assert_allclose(got.images, want.images, atol=1e-6)


def test_sd2_compvis_checkpoint_exports_openclip_as_23_layer_clip(tmp_path):
  """OpenCLIP's penultimate layer becomes transformers' CLIPTextModel of 23 layers; the exported
  text encoder and UNet compute what ldm_jax's model computes."""
  from safetensors.numpy import save_file

  from ldm_jax.convert.compvis import convert_compvis
  from tests.test_stable_diffusion import _compvis_checkpoint, _tiny_config

  sd, _, _ = _compvis_checkpoint(2)
  path = str(tmp_path / 'sd2.safetensors')
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, path)
  config = _tiny_config(2)
  convert_compvis(path, config, str(tmp_path / 'run'))
  export_diffusers(str(tmp_path / 'run'), str(tmp_path / 'exported'))
  loaded = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / 'exported'))
  assert loaded.text_encoder.config.num_hidden_layers == config.cond_stage.n_layer - 1
  pipe = ldm_jax.load(str(tmp_path / 'run'))
  tokens = pipe.ldm.task.tokenize(['a red cube on a table'])
  want = loaded.tokenizer(['a red cube on a table'], padding='max_length', max_length=77)
  np.testing.assert_array_equal(tokens, np.asarray(want.input_ids))  # padded with '!' = 0
  cond = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, jnp.asarray(tokens))
  with torch.no_grad():
    ctx = loaded.text_encoder(torch.from_numpy(np.asarray(tokens, np.int64)))[0].numpy()
  assert _max_err(cond['crossattn'], ctx) < TOL
  x = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype(np.float32)
  t = np.array([500])
  with torch.no_grad():
    want = _nhwc(
      loaded.unet(_nchw(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(ctx)).sample
    )
  got = jax.jit(pipe.ldm.model_output)(pipe.params, jnp.asarray(x), jnp.asarray(t), cond)
  assert _max_err(got, want) < TOL * max(1.0, float(np.abs(want).max()))
  assert loaded.scheduler.config.prediction_type == 'v_prediction'


def _tiny_uncond_config():
  from ldm_jax.config import load_config_file

  c = load_config_file(os.path.join(ROOT, 'configs/digits_ldm.py'))
  c.task, c.cond_stage.kind, c.cond_stage.p_uncond = 'unconditional', 'none', 0.0
  c.unet.update(dict(use_spatial_transformer=False, context_dim=0, num_head_channels=32))
  c.diffusion.scale_by_std = False
  c.diffusion.scale_factor = 0.6
  return c


def test_a_model_made_here_samples_the_same_in_diffusers(tmp_path):
  """An unconditional KL LDM with scale factor 0.6 (weights made here): diffusers' LDMPipeline
  run on the exported folder draws ldm_jax's DDIM images from the same noise."""
  from ldm_jax.convert import compvis as convert

  config = _tiny_uncond_config()
  sd = compvis_ldm_state_dict(config, seed=5, scale_factor=0.6)
  convert.write_workdir(str(tmp_path / 'run'), config, convert.convert_ldm(sd, config))
  report = export_diffusers(str(tmp_path / 'run'), str(tmp_path / 'exported'))
  assert report['class'] == 'LDMPipeline'
  loaded = diffusers.DiffusionPipeline.from_pretrained(str(tmp_path / 'exported'))
  assert loaded.vqvae.config.scaling_factor == pytest.approx(0.6)
  loaded.set_progress_bar_config(disable=True)
  pipe = ldm_jax.load(str(tmp_path / 'run'))
  from ldm_jax.latent_diffusion import latent_shape

  h, w, c = latent_shape(pipe.config)
  noise = torch.randn((2, c, h, w), generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    want = loaded(
      batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4,
      output_type='np',
    ).images  # fmt: skip
  got = pipe.sample(2, sampler='ddim', steps=4, latents=_nhwc(noise), return_float=True)
  assert _max_err(np.clip(got / 2 + 0.5, 0, 1), want) < 1e-4


def test_what_diffusers_cannot_express_is_refused_by_name(tmp_path):
  from ldm_jax.config import load_config_file
  from ldm_jax.convert import compvis as convert

  config = load_config_file(os.path.join(ROOT, 'configs/digits_ldm.py'))
  sd = compvis_ldm_state_dict(config, seed=1)
  convert.write_workdir(str(tmp_path / 'run'), config, convert.convert_ldm(sd, config))
  from ldm_jax.errors import UserError

  with pytest.raises(
    UserError, match='diffusers has no pipeline for a class LDM.*--format=compvis'
  ):
    export_diffusers(str(tmp_path / 'run'), str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out')
  r = run_cli(
    '-m', 'ldm_jax.export', f'--workdir={tmp_path / "run"}', '--format=diffusers',
    f'--out={tmp_path / "x.safetensors"}',
  )  # fmt: skip
  user_error(r, 'writes a folder')
  config = _tiny_uncond_config()
  config.unet.update(dict(num_head_channels=-1, num_heads=2, attention_resolutions=(1, 2)))
  from ldm_jax.export.diffusers import unet_config

  with pytest.raises(UserError, match='one head width'):
    unet_config(config)


@pytest.mark.parametrize(
  'name', ['sd_v1.py', 'sd_v2_768_v.py', 'sd_v1_inpainting.py', 'celeba256.py', 'bsr_sr.py']
)
def test_the_importer_reads_back_what_the_exporter_writes(name):
  """One table (convert/diffusers_unet.py) serves both directions: every released UNet that
  diffusers can express comes back from its exported config.json with the same options."""
  import dataclasses

  from ldm_jax.config import UNetConfig, load_config_file
  from ldm_jax.convert.diffusers_unet import unet_config, unet_fields

  config = load_config_file(f'configs/released/{name}')
  ours = UNetConfig.from_config(config)
  levels = [2**i for i in range(len(ours.channel_mult))]  # bsr_sr also names 16, which no level has
  reached = tuple(r for r in ours.attention_resolutions if r in levels)
  ours = dataclasses.replace(ours, attention_resolutions=reached)
  cfg = unet_config(config, '0.0')
  back = dataclasses.replace(ours, **unet_fields(cfg))
  if not ours.use_spatial_transformer:  # diffusers' UNet2DModel has no legacy head rule
    back = dataclasses.replace(back, legacy=ours.legacy)
  if ours.num_head_channels > 0 and not ours.use_spatial_transformer:
    assert cfg['attention_head_dim'] == ours.num_head_channels
  assert back == ours, {
    f.name: (getattr(ours, f.name), getattr(back, f.name))
    for f in dataclasses.fields(ours)
    if getattr(ours, f.name) != getattr(back, f.name)
  }
