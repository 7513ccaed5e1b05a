"""The CLIP score of text-to-image samples: 100 x max(cos(image embedding, text embedding), 0) per
sample, averaged (the definition of torchmetrics' CLIPScore, which text-to-image papers report),
with both CLIP towers of a ``python -m ldm_jax.convert clip`` folder (a transformers CLIPModel
folder converted; e.g. openai/clip-vit-large-patch14). Images go through ``nn.clip.clip_pixels``
(shorter side to the tower's size, bicubic, centre crop, CLIP's normalisation)."""

from __future__ import annotations

import json

import numpy as np

from ldm_jax import storage
from ldm_jax.errors import UserError


class ClipScore:
  def __init__(self, folder: str):
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import unflatten_dict

    from ldm_jax.nn.clip import CLIPVisionModel, clip_pixels
    from ldm_jax.tasks.embeddings import clip_text_embedder

    if not storage.exists(storage.join(folder, 'vision_params.npz')):
      raise UserError(
        f'{folder!r} has no CLIP image tower (vision_params.npz): convert a full CLIPModel folder '
        'with python -m ldm_jax.convert clip --path=<CLIPModel folder> --out=DIR'
      )
    cfg = json.loads(storage.read_text(storage.join(folder, 'vision_config.json')))
    flat = storage.load_npz(storage.join(folder, 'vision_params.npz'))
    params = unflatten_dict({tuple(k.split('/')): v for k, v in flat.items()})
    model, size = CLIPVisionModel(**cfg), cfg['image_size']

    @jax.jit
    def embed_images(images):
      z = model.apply({'params': params}, clip_pixels(images, size))
      return z / jnp.linalg.norm(z, axis=-1, keepdims=True)

    self.embed_images = lambda images: np.asarray(embed_images(np.asarray(images, np.uint8)))
    self.embed_texts = clip_text_embedder(folder)

  def __call__(self, images_uint8, prompts) -> np.ndarray:
    """Per-sample scores [B] for uint8 images [B, H, W, 3] and their prompts."""
    if len(prompts) != len(images_uint8):
      raise ValueError(f'{len(images_uint8)} images but {len(prompts)} prompts')
    cos = np.sum(self.embed_images(images_uint8) * self.embed_texts(list(prompts)), axis=-1)
    return 100.0 * np.maximum(cos, 0.0)
