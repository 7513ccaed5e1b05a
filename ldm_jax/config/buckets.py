"""``config.data.buckets``: the shapes of aspect-ratio buckets (ldm_jax/data/buckets.py)."""

from __future__ import annotations

from ldm_jax.config.choices import ConfigError

# SDXL's published list (appendix I of the paper), (height, width), about 1024^2 pixels each.
_SDXL_PORTRAIT = (
  (512, 2048), (512, 1984), (512, 1920), (512, 1856), (576, 1792), (576, 1728), (576, 1664),
  (640, 1600), (640, 1536), (704, 1472), (704, 1408), (704, 1344), (768, 1344), (768, 1280),
  (832, 1216), (832, 1152), (896, 1152), (896, 1088), (960, 1088), (960, 1024),
)  # fmt: skip
SDXL_BUCKETS = (*_SDXL_PORTRAIT, (1024, 1024), *((w, h) for h, w in reversed(_SDXL_PORTRAIT)))


def parse_buckets(spec: str) -> tuple[tuple[int, int], ...]:
  """``config.data.buckets``: '' (off), 'sdxl', or shapes 'HxW,HxW,...' (e.g. '832x1216,1024x1024,1216x832')."""
  spec = (spec or '').strip()
  if not spec:
    return ()
  if spec.lower() == 'sdxl':
    return SDXL_BUCKETS
  shapes = []
  for part in spec.split(','):
    h, x, w = part.strip().lower().partition('x')
    if not (x and h.isdigit() and w.isdigit() and int(h) > 0 and int(w) > 0):
      raise ConfigError(
        f'config.data.buckets={spec!r}: {part.strip()!r} is not HEIGHTxWIDTH; give '
        "'sdxl' or shapes such as '832x1216,1024x1024,1216x832'"
      )
    shapes.append((int(h), int(w)))
  if len(set(shapes)) != len(shapes):
    raise ConfigError(f'config.data.buckets={spec!r} lists a shape twice')
  return tuple(shapes)
