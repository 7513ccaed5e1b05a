"""A PyTorch peer of the reference's UNetModel (ldm/modules/diffusionmodules/openaimodel.py with
ldm/modules/attention.py's SpatialTransformer), written from the reference's structure for parity
tests; module and parameter names equal the reference's state-dict keys. Legacy QKV attention
order only (what every released model uses)."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
  def forward(self, x):
    return super().forward(x.float()).type(x.dtype)


def normalization(c):
  return GroupNorm32(32, c)


def timestep_embedding(t, dim, max_period=10000):
  half = dim // 2
  freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
  args = t[:, None].float() * freqs[None]
  emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
  if dim % 2:
    emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
  return emb


class Upsample(nn.Module):
  def __init__(self, c, use_conv, out=None):
    super().__init__()
    self.use_conv = use_conv
    if use_conv:
      self.conv = nn.Conv2d(c, out or c, 3, padding=1)

  def forward(self, x):
    x = F.interpolate(x, scale_factor=2, mode='nearest')
    return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
  def __init__(self, c, use_conv, out=None):
    super().__init__()
    self.op = nn.Conv2d(c, out or c, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

  def forward(self, x):
    return self.op(x)


class ResBlock(nn.Module):
  def __init__(self, c, emb_c, out=None, scale_shift=False, up=False, down=False):
    super().__init__()
    out = out or c
    self.scale_shift, self.updown = scale_shift, up or down
    self.in_layers = nn.Sequential(normalization(c), nn.SiLU(), nn.Conv2d(c, out, 3, padding=1))
    if up:
      self.h_upd, self.x_upd = Upsample(c, False), Upsample(c, False)
    elif down:
      self.h_upd, self.x_upd = Downsample(c, False), Downsample(c, False)
    self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_c, 2 * out if scale_shift else out))
    self.out_layers = nn.Sequential(
      normalization(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1)
    )
    self.skip_connection = nn.Identity() if out == c else nn.Conv2d(c, out, 1)

  def forward(self, x, emb):
    if self.updown:
      h = self.in_layers[:-1](x)
      h, x = self.h_upd(h), self.x_upd(x)
      h = self.in_layers[-1](h)
    else:
      h = self.in_layers(x)
    e = self.emb_layers(emb)[..., None, None]
    if self.scale_shift:
      scale, shift = torch.chunk(e, 2, dim=1)
      h = self.out_layers[0](h) * (1 + scale) + shift
      h = self.out_layers[1:](h)
    else:
      h = self.out_layers(h + e)
    return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
  def __init__(self, c, num_heads=1, num_head_channels=-1):
    super().__init__()
    self.heads = num_heads if num_head_channels == -1 else c // num_head_channels
    self.norm = normalization(c)
    self.qkv = nn.Conv1d(c, 3 * c, 1)
    self.proj_out = nn.Conv1d(c, c, 1)

  def forward(self, x):
    b, c, *spatial = x.shape
    x = x.reshape(b, c, -1)
    qkv = self.qkv(self.norm(x))
    bs, width, length = qkv.shape
    ch = width // (3 * self.heads)
    q, k, v = qkv.reshape(bs * self.heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    w = torch.einsum('bct,bcs->bts', q * scale, k * scale).float().softmax(dim=-1).type(q.dtype)
    a = torch.einsum('bts,bcs->bct', w, v).reshape(bs, -1, length)
    return (x + self.proj_out(a)).reshape(b, c, *spatial)


class CrossAttention(nn.Module):
  def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64):
    super().__init__()
    inner = heads * dim_head
    context_dim = context_dim or query_dim
    self.heads, self.scale = heads, dim_head**-0.5
    self.to_q = nn.Linear(query_dim, inner, bias=False)
    self.to_k = nn.Linear(context_dim, inner, bias=False)
    self.to_v = nn.Linear(context_dim, inner, bias=False)
    self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

  def forward(self, x, context=None):
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, -1).permute(0, 2, 1, 3)
    q, k, v = split(q), split(k), split(v)
    attn = (torch.einsum('bhid,bhjd->bhij', q, k) * self.scale).softmax(dim=-1)
    out = torch.einsum('bhij,bhjd->bhid', attn, v).permute(0, 2, 1, 3)
    return self.to_out(out.reshape(out.shape[0], out.shape[1], -1))


class GEGLU(nn.Module):
  def __init__(self, dim_in, dim_out):
    super().__init__()
    self.proj = nn.Linear(dim_in, dim_out * 2)

  def forward(self, x):
    x, gate = self.proj(x).chunk(2, dim=-1)
    return x * F.gelu(gate)


class FeedForward(nn.Module):
  def __init__(self, dim, mult=4):
    super().__init__()
    self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

  def forward(self, x):
    return self.net(x)


class BasicTransformerBlock(nn.Module):
  def __init__(self, dim, heads, d_head, context_dim):
    super().__init__()
    self.attn1 = CrossAttention(dim, heads=heads, dim_head=d_head)
    self.ff = FeedForward(dim)
    self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=heads, dim_head=d_head)
    self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

  def forward(self, x, context=None):
    x = self.attn1(self.norm1(x)) + x
    x = self.attn2(self.norm2(x), context) + x
    return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
  def __init__(self, c, heads, d_head, depth=1, context_dim=None):
    super().__init__()
    inner = heads * d_head
    self.norm = nn.GroupNorm(32, c, eps=1e-6, affine=True)
    self.proj_in = nn.Conv2d(c, inner, 1)
    self.transformer_blocks = nn.ModuleList(
      [BasicTransformerBlock(inner, heads, d_head, context_dim) for _ in range(depth)]
    )
    self.proj_out = nn.Conv2d(inner, c, 1)

  def forward(self, x, context=None):
    b, c, h, w = x.shape
    x_in = x
    x = self.proj_in(self.norm(x))
    x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1)
    for block in self.transformer_blocks:
      x = block(x, context)
    x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2)
    return self.proj_out(x) + x_in


class TimestepEmbedSequential(nn.Sequential):
  def forward(self, x, emb, context=None):
    for layer in self:
      if isinstance(layer, ResBlock):
        x = layer(x, emb)
      elif isinstance(layer, SpatialTransformer):
        x = layer(x, context)
      else:
        x = layer(x)
    return x


class UNetModel(nn.Module):
  def __init__(
    self,
    in_channels,
    model_channels,
    out_channels,
    num_res_blocks,
    attention_resolutions,
    channel_mult=(1, 2, 4, 8),
    num_classes=None,
    num_heads=-1,
    num_head_channels=-1,
    use_scale_shift_norm=False,
    resblock_updown=False,
    use_spatial_transformer=False,
    transformer_depth=1,
    context_dim=None,
    legacy=True,
    conv_resample=True,
  ):
    super().__init__()
    self.model_channels, self.num_classes = model_channels, num_classes
    ted = model_channels * 4
    self.time_embed = nn.Sequential(nn.Linear(model_channels, ted), nn.SiLU(), nn.Linear(ted, ted))
    if num_classes:
      self.label_emb = nn.Embedding(num_classes, ted)
    rb = lambda c, out, **kw: ResBlock(c, ted, out, use_scale_shift_norm, **kw)

    def attn(ch):
      if num_head_channels == -1:
        heads, dim_head = num_heads, ch // num_heads
      else:
        heads, dim_head = ch // num_head_channels, num_head_channels
      if legacy:
        dim_head = ch // heads if use_spatial_transformer else num_head_channels
      if use_spatial_transformer:
        return SpatialTransformer(ch, heads, dim_head, transformer_depth, context_dim)
      return AttentionBlock(ch, num_heads=heads, num_head_channels=dim_head)

    self.input_blocks = nn.ModuleList(
      [TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))]
    )
    chans, ch, ds = [model_channels], model_channels, 1
    for level, mult in enumerate(channel_mult):
      for _ in range(num_res_blocks):
        layers = [rb(ch, mult * model_channels)]
        ch = mult * model_channels
        if ds in attention_resolutions:
          layers.append(attn(ch))
        self.input_blocks.append(TimestepEmbedSequential(*layers))
        chans.append(ch)
      if level != len(channel_mult) - 1:
        self.input_blocks.append(
          TimestepEmbedSequential(
            rb(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
          )
        )
        chans.append(ch)
        ds *= 2
    self.middle_block = TimestepEmbedSequential(rb(ch, ch), attn(ch), rb(ch, ch))
    self.output_blocks = nn.ModuleList()
    for level, mult in list(enumerate(channel_mult))[::-1]:
      for i in range(num_res_blocks + 1):
        layers = [rb(ch + chans.pop(), model_channels * mult)]
        ch = model_channels * mult
        if ds in attention_resolutions:
          layers.append(attn(ch))
        if level and i == num_res_blocks:
          layers.append(rb(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
          ds //= 2
        self.output_blocks.append(TimestepEmbedSequential(*layers))
    self.out = nn.Sequential(
      normalization(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1)
    )

  def forward(self, x, timesteps, context=None, y=None):
    emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
    if self.num_classes:
      emb = emb + self.label_emb(y)
    hs, h = [], x
    for module in self.input_blocks:
      h = module(h, emb, context)
      hs.append(h)
    h = self.middle_block(h, emb, context)
    for module in self.output_blocks:
      h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
    return self.out(h)
