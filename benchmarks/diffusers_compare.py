"""The same measurements in diffusers PyTorch (``python benchmarks/run.py --compare_diffusers``).

The config's UNet as a diffusers UNet2DModel (unconditional models: the paper's LSUN/CelebA/FFHQ
LDMs) and its KL first stage as an AutoencoderKL. The architectures match block for block
(``unet_kwargs``: parameter counts are equal, tests/test_benchmarks.py); one difference is kept:
diffusers sets a head *width* per model where CompVis fixes a head *count* per block, so the head
split differs on some levels (churches: 8 heads of 24/48/96 channels vs heads of 24 channels).
Attention FLOPs do not depend on the split.

The baseline is what a diffusers user runs: bf16 autocast (fp32 weights, AdamW, an EMA copy
updated every step, as ours), PyTorch's SDPA attention, channels-last on CUDA; ``--torch_compile``
adds torch.compile. Sampling: DDIMScheduler (eta 0) and the AutoencoderKL decode.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import sig


def unet_kwargs(config) -> dict:
  """UNet2DModel arguments for an unconditional CompVis UNet config (config.unet)."""
  u = config.unet
  if config.cond_stage.kind != 'none' or u.use_spatial_transformer:
    raise ValueError(
      'the diffusers comparison covers unconditional UNets (UNet2DModel); this '
      f'config is {config.cond_stage.kind}-conditioned'
    )
  chans = [u.model_channels * m for m in u.channel_mult]
  attn = [2**i in tuple(u.attention_resolutions) for i in range(len(chans))]
  plain_down = 'ResnetDownsampleBlock2D' if u.resblock_updown else 'DownBlock2D'
  plain_up = 'ResnetUpsampleBlock2D' if u.resblock_updown else 'UpBlock2D'
  head = u.num_head_channels if u.num_head_channels > 0 else chans[0] // u.num_heads
  from ldm_jax.latent_diffusion import latent_shape

  h, _, c = latent_shape(config)
  return dict(
    sample_size=h,
    in_channels=u.in_channels or c,
    out_channels=u.out_channels or c,
    block_out_channels=tuple(chans),
    layers_per_block=u.num_res_blocks,
    down_block_types=tuple('AttnDownBlock2D' if a else plain_down for a in attn),
    up_block_types=tuple('AttnUpBlock2D' if a else plain_up for a in reversed(attn)),
    downsample_type='resnet' if u.resblock_updown else 'conv',
    upsample_type='resnet' if u.resblock_updown else 'conv',
    resnet_time_scale_shift='scale_shift' if u.use_scale_shift_norm else 'default',
    attention_head_dim=head,
    norm_num_groups=32,
    act_fn='silu',
    flip_sin_to_cos=True,
    attn_norm_num_groups=32,  # else diffusers drops the middle attention's GroupNorm
    freq_shift=0,
    dropout=u.dropout,
  )


def vae_kwargs(config) -> dict:
  fs = config.first_stage
  if fs.kind != 'kl':
    raise ValueError('the diffusers comparison covers KL first stages (AutoencoderKL)')
  n = len(fs.ch_mult)
  return dict(
    in_channels=3,
    out_channels=3,
    latent_channels=fs.embed_dim,
    block_out_channels=tuple(fs.ch * m for m in fs.ch_mult),
    layers_per_block=fs.num_res_blocks,
    down_block_types=('DownEncoderBlock2D',) * n,
    up_block_types=('UpDecoderBlock2D',) * n,
    norm_num_groups=32,
    sample_size=config.data.image_size,
  )


def _timer(torch, device):
  def measure(fn, iters):
    fn()  # warm-up (and compile)
    times = []
    for _ in range(iters):
      if device == 'cuda':
        torch.cuda.synchronize()
      t0 = time.perf_counter()
      fn()
      if device == 'cuda':
        torch.cuda.synchronize()
      times.append(time.perf_counter() - t0)
    return statistics.median(times)

  return measure


def run(config, ours: list[dict], flags) -> list[dict]:
  import types

  import diffusers
  import torch

  from ldm_jax.latent_diffusion import latent_shape

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  bf16 = flags.dtype == 'bfloat16'
  fmt = torch.channels_last if device == 'cuda' else torch.contiguous_format
  torch.manual_seed(0)
  unet = diffusers.UNet2DModel(**unet_kwargs(config)).to(device, memory_format=fmt)
  vae = diffusers.AutoencoderKL(**vae_kwargs(config)).to(device, memory_format=fmt)
  if flags.torch_compile:
    unet = torch.compile(unet)
  env = types.SimpleNamespace(
    torch=torch,
    diffusers=diffusers,
    device=device,
    fmt=fmt,
    unet=unet,
    vae=vae,
    shape=latent_shape(config),
    measure=_timer(torch, device),
    autocast=lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=bf16),
    info={
      'framework': f'diffusers {diffusers.__version__} / torch {torch.__version__}',
      'torch_device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu',
      'torch_compile': flags.torch_compile,
      'unet_params': sum(p.numel() for p in unet.parameters()),
    },
  )
  what = {r['what'] for r in ours}
  out = [_train_row(env, config, flags)] if 'train' in what else []
  unet.eval()
  if any(w.startswith('sample_') for w in what) and flags.sampler == 'ddim':
    out += _sample_rows(env, config, flags)
  if 'first_stage_encode' in what:
    out += _first_stage_rows(env, config, flags)
  return out


def _train_row(env, config, flags) -> dict:
  """The UNet's training step in diffusers (AdamW, EMA), as ours: loss, backward, update."""
  torch, unet, device = env.torch, env.unet, env.device
  h, w, c = env.shape
  b = config.training.batch_size
  opt = torch.optim.AdamW(unet.parameters(), lr=5e-5, weight_decay=0.01)
  ema = [p.detach().clone() for p in unet.parameters()]
  x0 = torch.randn(b, c, h, w, device=device).to(memory_format=env.fmt)

  def step():
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (b,), device=device)
    with env.autocast():
      pred = unet(x0 + noise, t).sample  # the q_sample mix costs nothing that matters here
    loss = (pred.float() - noise).abs().mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    with torch.no_grad():
      torch._foreach_lerp_(ema, [p.detach() for p in unet.parameters()], 1 - 0.9999)

  unet.train()
  sec = env.measure(step, flags.iters)
  return {
    'what': 'train',
    'batch': b,
    'step_time_s': round(sec, 5),
    'images_per_s': sig(b / sec),
    **env.info,
  }


def _sample_rows(env, config, flags) -> list[dict]:
  """DDIM sampling with diffusers' DDIMScheduler set up as the CompVis grid, then the decoder."""
  torch, unet, vae = env.torch, env.unet, env.vae
  h, w, c = env.shape
  b, d = flags.sample_batch_size, config.diffusion
  if d.beta_schedule != 'linear':
    raise ValueError(f"the comparison maps CompVis's linear schedule only, not {d.beta_schedule!r}")
  out = []
  for s in flags.sample_steps:
    # CompVis 'linear' = linspace of sqrt(beta), squared = diffusers 'scaled_linear'; the +1 grid
    scheduler = env.diffusers.DDIMScheduler(
      num_train_timesteps=d.timesteps,
      beta_start=d.linear_start,
      beta_end=d.linear_end,
      beta_schedule='scaled_linear',
      clip_sample=False,
      set_alpha_to_one=False,
      steps_offset=1,
    )
    scheduler.set_timesteps(int(s))

    @torch.no_grad()
    def sample(scheduler=scheduler):
      x = torch.randn(b, c, h, w, device=env.device)
      with env.autocast():
        for t in scheduler.timesteps:
          x = scheduler.step(unet(x, t).sample.float(), t, x).prev_sample
        return vae.decode(x).sample

    sec = env.measure(sample, flags.sample_iters)
    out.append(
      {
        'what': f'sample_{flags.sampler}{s}',
        'batch': b,
        'call_time_s': round(sec, 4),
        'images_per_s': sig(b / sec),
        **env.info,
      }
    )
  return out


def _first_stage_rows(env, config, flags) -> list[dict]:
  torch, vae = env.torch, env.vae
  h, w, c = env.shape
  b, size = flags.sample_batch_size, config.data.image_size
  images = torch.rand(b, 3, size, size, device=env.device).to(memory_format=env.fmt) * 2 - 1
  latents = torch.randn(b, c, h, w, device=env.device).to(memory_format=env.fmt)
  out = []
  for name, fn in (
    ('encode', lambda: vae.encode(images).latent_dist.mode()),
    ('decode', lambda: vae.decode(latents).sample),
  ):
    with torch.no_grad(), env.autocast():
      sec = env.measure(fn, flags.sample_iters)
    out.append(
      {
        'what': f'first_stage_{name}',
        'batch': b,
        'call_time_s': round(sec, 4),
        'images_per_s': sig(b / sec),
        **env.info,
      }
    )
  return out
