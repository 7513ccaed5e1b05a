"""ldm_jax: Latent Diffusion Models (Rombach et al., CVPR 2022) in JAX/Flax.

  import ldm_jax
  pipe = ldm_jax.load('runs/cin256')   # or a config file / ConfigDict (random weights)
  images = pipe.sample(4, class_label=207, guidance_scale=3.0)

See ldm_jax.pipeline. Imported lazily, so that `import ldm_jax.<module>` stays light.
"""


def __getattr__(name):
  if name in ('load', 'Pipeline'):
    from ldm_jax.sampling import pipeline

    return getattr(pipeline, name)
  raise AttributeError(f'module ldm_jax has no attribute {name!r}')
