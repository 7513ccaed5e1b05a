"""ldm_jax: Latent Diffusion Models (Rombach et al., CVPR 2022) in JAX/Flax.

  import ldm_jax
  pipe = ldm_jax.load('runs/cin256')   # or a config file / ConfigDict (random weights)
  pipe = ldm_jax.load('CompVis/ldm-celebahq-256')   # a hub id: converted once, then cached
  images = pipe.sample(4, class_label=207, guidance_scale=3.0)

See ldm_jax.sampling.pipeline. Imported lazily, so that `import ldm_jax.<module>` stays light.
"""


def load(path_or_config, step=None, use_ema=True, seed=0, lora=None, lora_scale=1.0):
  """ldm_jax.sampling.pipeline.load, plus Hugging Face hub ids (``org/name``) of diffusers
  pipelines and models: converted once into ``$LDM_JAX_CACHE/hub`` (ldm_jax.convert.hub).
  ``lora``: a LoRA file (diffusers/PEFT or kohya; or a list of them) merged into the weights at
  ``lora_scale`` (or a list of scales), as diffusers' ``cross_attention_kwargs={'scale': s}``
  (ldm_jax.convert.lora)."""
  import os

  from ldm_jax import storage
  from ldm_jax.convert import hub
  from ldm_jax.sampling import pipeline

  if isinstance(path_or_config, str) and hub.is_hub_id(path_or_config):
    from ldm_jax.convert.diffusers import convert_diffusers
    from ldm_jax.storage import cache_dir

    workdir = os.path.join(cache_dir(), 'hub', path_or_config.replace('/', '--'))
    if not storage.isdir(os.path.join(workdir, 'checkpoints')):
      convert_diffusers(hub.snapshot(path_or_config), workdir)
    path_or_config = workdir
  pipe = pipeline.load_workdir(path_or_config, step, use_ema, seed)
  if lora:
    from ldm_jax.convert.lora import apply_lora

    pipe = apply_lora(pipe, lora, lora_scale)
  return pipe


def __getattr__(name):
  if name == 'Pipeline':
    from ldm_jax.sampling import pipeline

    return pipeline.Pipeline
  raise AttributeError(f'module ldm_jax has no attribute {name!r}')
