"""``config.lora.targets``: which layers get a low-rank adapter (ldm_jax/nn/lora.py)."""

from __future__ import annotations

from ldm_jax.config.choices import ConfigError

# Target groups: regular expressions over a layer's path ('/'-joined) in the LDM's parameters.
TARGETS = {
  # diffusers' LoRA scripts: to_q, to_k, to_v, to_out.0 of every attention (self and cross)
  'attn': r'^unet/.*/attn[12]/(to_q|to_k|to_v|to_out_0)$',
  'ff': r'^unet/.*/ff/(net_0/proj|net_2)$',  # the transformer blocks' feed-forward (GEGLU in, out)
  'conv': r'^unet/.*/(in_layers_2|out_layers_3)$',  # LoCon: the ResBlocks' two 3x3 convolutions
  'text': r'^cond_stage/.*/self_attn/(q_proj|k_proj|v_proj|out_proj)$',  # the text encoder's attention
}


def parse_targets(spec: str) -> tuple[str, ...]:
  """``config.lora.targets``: a comma-separated list of TARGETS' names."""
  names = tuple(t.strip() for t in spec.split(',') if t.strip())
  unknown = [t for t in names if t not in TARGETS]
  if unknown or not names:
    raise ConfigError(
      f'config.lora.targets={spec!r}: use a comma-separated list of {list(TARGETS)}, e.g. "attn,ff"'
    )
  return names
