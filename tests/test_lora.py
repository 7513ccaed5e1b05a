"""LoRA files merged for sampling (ldm_jax.convert.lora) against diffusers + peft on a tiny SD 1
pipeline: a PEFT LoRA on the UNet, saved by diffusers' save_lora_weights, and the same adapters
written in kohya's naming give diffusers' images from the same latents at scales 1 and 0.5
(diffusers' load_lora_weights reads both); scale 0 is the base model; a LoRA on the text encoder
gives peft's text states (diffusers' text-encoder loader needs a peft release newer than PyPI
has beside transformers 5: peft itself is the peer there); a file for another model is one
error."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip('torch')
diffusers = pytest.importorskip('diffusers')
peft = pytest.importorskip('peft')

import ldm_jax  # noqa: E402
from tests.test_convert_diffusers import TOL, _max_err, _nchw  # noqa: E402

PROMPTS = ['a photograph of an astronaut riding a horse', 'an oil painting of a tree']


@pytest.fixture(scope='module')
def sd1(tmp_path_factory):
  """(root, the base pipeline folder converted to root/run, the PEFT LoRA file, its tensors)."""
  from diffusers.utils import convert_state_dict_to_diffusers
  from peft import LoraConfig
  from peft.utils import get_peft_model_state_dict

  from ldm_jax.convert.diffusers import convert_diffusers
  from tests.test_stable_diffusion import _sd_pipeline

  root = tmp_path_factory.mktemp('lora')
  pipe = _sd_pipeline(1, root / 'pipe')
  convert_diffusers(str(root / 'pipe'), str(root / 'run'))
  torch.manual_seed(0)
  pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                   target_modules=['to_q', 'to_k', 'to_v', 'to_out.0']))  # fmt: skip
  unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
  diffusers.StableDiffusionPipeline.save_lora_weights(
    str(root / 'peft'), unet_lora_layers=unet_layers, safe_serialization=True
  )
  # the text encoder's adapter through peft itself (r 2, alpha 4: a scaling of 2)
  text_config = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False,
                           target_modules=['q_proj', 'v_proj'])  # fmt: skip
  peft.inject_adapter_in_model(text_config, pipe.text_encoder)
  text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.text_encoder))
  diffusers.StableDiffusionPipeline.save_lora_weights(
    str(root / 'text'), unet_lora_layers={}, text_encoder_lora_layers=text_layers,
    safe_serialization=True, text_encoder_lora_adapter_metadata=text_config.to_dict(),
  )  # fmt: skip
  return root, pipe.text_encoder


def _theirs(root, lora_file, scale, latents):
  pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(root / 'pipe'))
  pipe.set_progress_bar_config(disable=True)
  pipe.load_lora_weights(str(lora_file))
  with torch.no_grad():
    return pipe(
      PROMPTS, num_inference_steps=4, guidance_scale=3.0, latents=_nchw(latents),
      output_type='np', cross_attention_kwargs={'scale': scale},
    ).images  # fmt: skip


def _ours(root, lora_file, scale, latents):
  pipe = ldm_jax.load(str(root / 'run'), lora=str(lora_file), lora_scale=scale)
  images = pipe.sample(
    2, prompt=PROMPTS, sampler='ddim', steps=4, guidance_scale=3.0, latents=latents,
    return_float=True,
  )  # fmt: skip
  return np.clip(images / 2 + 0.5, 0, 1), pipe


@pytest.mark.parametrize('scale', [1.0, 0.5])
def test_a_peft_lora_samples_as_diffusers(sd1, scale):
  sd1, _ = sd1
  latents = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype(np.float32)
  lora = sd1 / 'peft' / 'pytorch_lora_weights.safetensors'
  want = _theirs(sd1, lora, scale, latents)
  got, pipe = _ours(sd1, lora, scale, latents)
  assert pipe.lora['modules'] > 10
  assert _max_err(got, want) < TOL, _max_err(got, want)
  base, _ = _ours(sd1, lora, 0.0, latents)
  plain = ldm_jax.load(str(sd1 / 'run')).sample(
    2, prompt=PROMPTS, sampler='ddim', steps=4, guidance_scale=3.0, latents=latents,
    return_float=True,
  )  # fmt: skip
  assert _max_err(base, np.clip(plain / 2 + 0.5, 0, 1)) < 1e-6  # scale 0: the base model
  assert _max_err(got, base) > 1e-3  # the adapters change the images


def test_the_same_adapters_in_kohya_naming_sample_as_diffusers(sd1, tmp_path):
  from safetensors.numpy import load_file, save_file

  sd1, _ = sd1
  peft_sd = load_file(str(sd1 / 'peft' / 'pytorch_lora_weights.safetensors'))
  kohya = {}
  for key, value in peft_sd.items():  # unet.<module>.lora.down.weight -> lora_unet_<module_>...
    part, rest = key.split('.', 1)
    module, role = rest.removesuffix('.weight').rsplit('.lora.', 1)
    name = {'unet': 'lora_unet_', 'text_encoder': 'lora_te_'}[part] + module.replace('.', '_')
    kohya[f'{name}.lora_{role}.weight'] = value
    if role == 'down':  # alpha = rank: the PEFT file's scaling of 1
      kohya[f'{name}.alpha'] = np.asarray(value.shape[0], np.float32)
  path = tmp_path / 'kohya.safetensors'
  save_file(kohya, str(path))
  latents = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype(np.float32)
  want = _theirs(sd1, path, 1.0, latents)
  got, _ = _ours(sd1, path, 1.0, latents)
  assert _max_err(got, want) < TOL, _max_err(got, want)


def test_a_lora_for_another_model_is_one_error(sd1, tmp_path):
  from safetensors.numpy import save_file

  sd1, _ = sd1
  from ldm_jax.convert.torch_names import ConversionError

  bad = {
    'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight': np.zeros((4, 320), np.float32),
    'unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight': np.zeros((320, 4), np.float32),
  }  # fmt: skip
  save_file(bad, str(tmp_path / 'sd15.safetensors'))
  with pytest.raises(ConversionError, match='another base model'):
    ldm_jax.load(str(sd1 / 'run'), lora=str(tmp_path / 'sd15.safetensors'))
  save_file({'something.else': np.zeros(3, np.float32)}, str(tmp_path / 'odd.safetensors'))
  with pytest.raises(ConversionError, match='something.else'):
    ldm_jax.load(str(sd1 / 'run'), lora=str(tmp_path / 'odd.safetensors'))


def test_a_text_encoder_lora_gives_peft_states(sd1):
  """The adapter's alpha (4 for rank 2) is in the file's metadata, as diffusers writes it."""
  import jax

  root, text_encoder = sd1
  pipe = ldm_jax.load(
    str(root / 'run'), lora=str(root / 'text' / 'pytorch_lora_weights.safetensors')
  )
  assert pipe.lora['modules'] == 4  # q and v of 2 layers
  tokens = pipe.ldm.task.tokenize(PROMPTS)
  ours = jax.jit(pipe.ldm.conditioning)(pipe.params, pipe.first_stage_params, tokens)['crossattn']
  with torch.no_grad():
    want = text_encoder(torch.from_numpy(np.asarray(tokens, np.int64)))[0].numpy()
  base = ldm_jax.load(str(root / 'run'))
  plain = jax.jit(base.ldm.conditioning)(base.params, base.first_stage_params, tokens)['crossattn']
  assert _max_err(ours, want) < TOL and _max_err(plain, want) > 1e-3


@pytest.mark.slow
def test_sample_py_takes_loras_and_records_them(sd1, tmp_path):
  import json

  from tests.helpers import run_cli

  root, _ = sd1
  files = f'{root / "peft" / "pytorch_lora_weights.safetensors"},{root / "text" / "pytorch_lora_weights.safetensors"}'
  r = run_cli(
    'sample.py', f'--workdir={root / "run"}', '--prompt=a tree', '--num_samples=2', '--steps=4',
    f'--lora={files}', '--lora_scale=0.5,1', f'--outdir={tmp_path / "out"}',
  )  # fmt: skip
  assert r.returncode == 0, r.stderr[-3000:]
  settings = json.loads((tmp_path / 'out' / 'sampling.json').read_text())
  assert settings['lora_scale'] == [0.5, 1.0] and len(settings['lora']) == 2
  assert (tmp_path / 'out' / '000001.png').exists()
  r = run_cli('sample.py', f'--workdir={root / "run"}', '--prompt=a tree', '--lora_scale=0.5')
  assert r.returncode == 2 and 'give --lora=FILE' in r.stderr
