"""UNetModel against the PyTorch peer (tests/torch_unet.py) at the same random weights: the noise
prediction for one config per conditioning kind and attention flavour (float32, <= 1e-4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
from ldm_jax.config import UNetConfig  # noqa: E402
from ldm_jax.convert.torch_names import load_state_dict  # noqa: E402
from ldm_jax.nn.unet import UNetModel  # noqa: E402
from tests.torch_unet import UNetModel as TorchUNet  # noqa: E402

CASES = {
  # churches-like: legacy AttentionBlock by num_heads, scale-shift norm, resblock up/down
  'uncond_attnblock_updown': dict(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    num_res_blocks=1,
    attention_resolutions=(2, 4),
    channel_mult=(1, 2, 2),
    num_heads=4,
    use_scale_shift_norm=True,
    resblock_updown=True,
  ),
  # cin-like: SpatialTransformer cross-attention by num_head_channels, depth 2
  'crossattn_transformer': dict(
    in_channels=3,
    out_channels=3,
    model_channels=32,
    num_res_blocks=2,
    attention_resolutions=(1, 2),
    channel_mult=(1, 2),
    num_head_channels=16,
    use_spatial_transformer=True,
    transformer_depth=2,
    context_dim=24,
  ),
  # txt2img-like: legacy=False head rule, num_heads
  'crossattn_nonlegacy': dict(
    in_channels=4,
    out_channels=4,
    model_channels=32,
    num_res_blocks=1,
    attention_resolutions=(2,),
    channel_mult=(1, 2),
    num_heads=4,
    use_spatial_transformer=True,
    context_dim=16,
    legacy=False,
  ),
  # concat conditioning (SR / semantic / inpainting: more inputs than outputs) + class vector
  'concat_classes': dict(
    in_channels=7,
    out_channels=3,
    model_channels=32,
    num_res_blocks=1,
    attention_resolutions=(2,),
    channel_mult=(1, 2),
    num_head_channels=16,
    num_classes=5,
  ),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_unet_matches_torch(name):
  kw = CASES[name]
  torch.manual_seed(0)
  ref = TorchUNet(**kw).eval()
  with torch.no_grad():  # zero-initialised out convs would hide errors: randomise everything
    for pname, p in ref.named_parameters():
      p.copy_(
        torch.randn_like(p) * (0.1 if p.ndim > 1 else 0.05)
        + (1.0 if 'norm' in pname and pname.endswith('weight') else 0.0)
      )
  ours = UNetModel(UNetConfig(**kw))
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 8, 8, kw['in_channels'])).astype(np.float32)
  t = np.array([3, 917], np.int64)
  ctx = (
    rng.normal(size=(2, 5, kw['context_dim'])).astype(np.float32) if kw.get('context_dim') else None
  )
  y = np.array([1, 4], np.int64) if kw.get('num_classes') else None
  template = jax.eval_shape(
    lambda k: ours.init(
      k,
      jnp.asarray(x),
      jnp.asarray(t, jnp.int32),
      None if ctx is None else jnp.asarray(ctx),
      None if y is None else jnp.asarray(y, jnp.int32),
    ),
    jax.random.PRNGKey(0),
  )['params']
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  params = load_state_dict(template, sd)
  with torch.no_grad():
    want = (
      ref(
        torch.from_numpy(x).permute(0, 3, 1, 2),
        torch.from_numpy(t),
        None if ctx is None else torch.from_numpy(ctx),
        None if y is None else torch.from_numpy(y),
      )
      .permute(0, 2, 3, 1)
      .numpy()
    )
  got = np.asarray(
    ours.apply(
      {'params': params},
      jnp.asarray(x),
      jnp.asarray(t, jnp.int32),
      None if ctx is None else jnp.asarray(ctx),
      None if y is None else jnp.asarray(y, jnp.int32),
    )
  )
  scale = np.abs(want).max()
  assert scale > 1e-2  # a real signal, not zeros
  np.testing.assert_allclose(got / scale, want / scale, atol=1e-4, rtol=0)
