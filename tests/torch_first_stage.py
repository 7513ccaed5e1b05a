"""A PyTorch peer of the reference's first stage (ldm/modules/diffusionmodules/model.py Encoder and
Decoder, AutoencoderKL, VQModel with taming's legacy VectorQuantizer), written from the reference's
structure for parity tests. Module and parameter names equal the reference's state-dict keys."""

import torch
import torch.nn.functional as F
from torch import nn


def Normalize(c):
  return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def swish(x):
  return x * torch.sigmoid(x)


class Upsample(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv = nn.Conv2d(c, c, 3, 1, 1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class Downsample(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.conv = nn.Conv2d(c, c, 3, 2, 0)

  def forward(self, x):
    return self.conv(F.pad(x, (0, 1, 0, 1)))


class ResnetBlock(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.norm1, self.conv1 = Normalize(cin), nn.Conv2d(cin, cout, 3, 1, 1)
    self.norm2, self.conv2 = Normalize(cout), nn.Conv2d(cout, cout, 3, 1, 1)
    if cin != cout:
      self.nin_shortcut = nn.Conv2d(cin, cout, 1)
    self.cin, self.cout = cin, cout

  def forward(self, x):
    h = self.conv1(swish(self.norm1(x)))
    h = self.conv2(swish(self.norm2(h)))
    return (self.nin_shortcut(x) if self.cin != self.cout else x) + h


class AttnBlock(nn.Module):
  def __init__(self, c):
    super().__init__()
    self.norm = Normalize(c)
    self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

  def forward(self, x):
    h = self.norm(x)
    q, k, v = self.q(h), self.k(h), self.v(h)
    b, c, hh, ww = q.shape
    q = q.reshape(b, c, hh * ww).permute(0, 2, 1)
    w = torch.bmm(q, k.reshape(b, c, hh * ww)) * (c**-0.5)
    w = F.softmax(w, dim=2)
    h = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return x + self.proj_out(h)


def make_attn(c, attn_type):
  return AttnBlock(c) if attn_type == 'vanilla' else nn.Identity()


class Encoder(nn.Module):
  def __init__(
    self,
    ch,
    ch_mult,
    num_res_blocks,
    attn_resolutions,
    resolution,
    z_channels,
    double_z,
    in_channels=3,
    attn_type='vanilla',
  ):
    super().__init__()
    self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
    self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
    curr_res, in_ch_mult = resolution, (1,) + tuple(ch_mult)
    self.down = nn.ModuleList()
    for i_level in range(self.num_resolutions):
      block, attn = nn.ModuleList(), nn.ModuleList()
      block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
      for _ in range(num_res_blocks):
        block.append(ResnetBlock(block_in, block_out))
        block_in = block_out
        if curr_res in attn_resolutions:
          attn.append(make_attn(block_in, attn_type))
      down = nn.Module()
      down.block, down.attn = block, attn
      if i_level != self.num_resolutions - 1:
        down.downsample = Downsample(block_in)
        curr_res //= 2
      self.down.append(down)
    self.mid = nn.Module()
    self.mid.block_1 = ResnetBlock(block_in, block_in)
    self.mid.attn_1 = make_attn(block_in, attn_type)
    self.mid.block_2 = ResnetBlock(block_in, block_in)
    self.norm_out = Normalize(block_in)
    self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, 1, 1)

  def forward(self, x):
    h = self.conv_in(x)
    for i_level in range(self.num_resolutions):
      for i_block in range(self.num_res_blocks):
        h = self.down[i_level].block[i_block](h)
        if len(self.down[i_level].attn) > 0:
          h = self.down[i_level].attn[i_block](h)
      if i_level != self.num_resolutions - 1:
        h = self.down[i_level].downsample(h)
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
    return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
  def __init__(
    self,
    ch,
    out_ch,
    ch_mult,
    num_res_blocks,
    attn_resolutions,
    resolution,
    z_channels,
    attn_type='vanilla',
  ):
    super().__init__()
    self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
    block_in = ch * ch_mult[-1]
    curr_res = resolution // 2 ** (self.num_resolutions - 1)
    self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
    self.mid = nn.Module()
    self.mid.block_1 = ResnetBlock(block_in, block_in)
    self.mid.attn_1 = make_attn(block_in, attn_type)
    self.mid.block_2 = ResnetBlock(block_in, block_in)
    self.up = nn.ModuleList()
    for i_level in reversed(range(self.num_resolutions)):
      block, attn = nn.ModuleList(), nn.ModuleList()
      block_out = ch * ch_mult[i_level]
      for _ in range(num_res_blocks + 1):
        block.append(ResnetBlock(block_in, block_out))
        block_in = block_out
        if curr_res in attn_resolutions:
          attn.append(make_attn(block_in, attn_type))
      up = nn.Module()
      up.block, up.attn = block, attn
      if i_level != 0:
        up.upsample = Upsample(block_in)
        curr_res *= 2
      self.up.insert(0, up)
    self.norm_out = Normalize(block_in)
    self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

  def forward(self, z):
    h = self.conv_in(z)
    h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
    for i_level in reversed(range(self.num_resolutions)):
      for i_block in range(self.num_res_blocks + 1):
        h = self.up[i_level].block[i_block](h)
        if len(self.up[i_level].attn) > 0:
          h = self.up[i_level].attn[i_block](h)
      if i_level != 0:
        h = self.up[i_level].upsample(h)
    return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
  """taming's legacy VectorQuantizer (beta 0.25): nearest code by squared distance."""

  def __init__(self, n_e, e_dim):
    super().__init__()
    self.embedding = nn.Embedding(n_e, e_dim)

  def forward(self, z):
    z = z.permute(0, 2, 3, 1).contiguous()
    zf = z.view(-1, z.shape[-1])
    w = self.embedding.weight
    d = (zf**2).sum(1, keepdim=True) + (w**2).sum(1) - 2 * zf @ w.t()
    idx = torch.argmin(d, dim=1)
    zq = self.embedding(idx).view(z.shape)
    return zq.permute(0, 3, 1, 2).contiguous(), idx.view(z.shape[:-1])


class FirstStage(nn.Module):
  def __init__(
    self,
    kind,
    embed_dim,
    ch,
    ch_mult,
    num_res_blocks,
    attn_resolutions,
    resolution,
    n_embed=0,
    attn_type='vanilla',
  ):
    super().__init__()
    z = embed_dim
    self.kind = kind
    self.encoder = Encoder(
      ch,
      ch_mult,
      num_res_blocks,
      attn_resolutions,
      resolution,
      z,
      double_z=kind == 'kl',
      attn_type=attn_type,
    )
    self.decoder = Decoder(
      ch, 3, ch_mult, num_res_blocks, attn_resolutions, resolution, z, attn_type=attn_type
    )
    self.quant_conv = nn.Conv2d(
      2 * z if kind == 'kl' else z, 2 * embed_dim if kind == 'kl' else embed_dim, 1
    )
    self.post_quant_conv = nn.Conv2d(embed_dim, z, 1)
    if kind == 'vq':
      self.quantize = VectorQuantizer(n_embed, embed_dim)

  def encode(self, x):
    """KL: the moments [B, 2c, h, w]; VQ: pre-quantisation latents (VQModelInterface)."""
    return self.quant_conv(self.encoder(x))

  def decode(self, z):
    if self.kind == 'vq':
      z, _ = self.quantize(z)
    return self.decoder(self.post_quant_conv(z))
