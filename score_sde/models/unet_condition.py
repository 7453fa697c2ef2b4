"""Stable Diffusion's conditional UNet (Rombach et al. 2022) with the parameter layout of
diffusers' ``UNet2DConditionModel`` (SD 1.x / 2.x blocks), in NHWC.

    temb = MLP(sinusoid(t))                                           (B, 4 C_0)
    h    = conv_in(x); down blocks: [ResNet(h, temb) -> Transformer(h, context)] x layers,
           stride-2 conv; mid: ResNet, Transformer, ResNet; up blocks: [concat skip ->
           ResNet -> Transformer] x (layers + 1), nearest x2 + conv; GroupNorm, SiLU, conv_out

A transformer block on (B, H W, C) tokens: h += SelfAttn(LN h); h += CrossAttn(LN h, context);
h += W_2 (a * GELU(g)), (a, g) = W_1 LN h (GEGLU). ``context`` is (B, L, D_ctx), e.g. CLIP's
last hidden state (77 x 768 for SD 1.x). Parameter names mirror diffusers'
(``down_blocks_1/attentions_0/transformer_blocks_0/attn2/to_k/kernel`` <->
``down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight``); ``convert_unet.py``
reads the published safetensors.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.models import precond

CROSS_DOWN, PLAIN_DOWN = 'CrossAttnDownBlock2D', 'DownBlock2D'
CROSS_UP, PLAIN_UP = 'CrossAttnUpBlock2D', 'UpBlock2D'
MID = 'UNetMidBlock2DCrossAttn'


def timestep_embedding(t: jax.Array, dim: int, flip_sin_to_cos: bool = True,
                       freq_shift: float = 0.0, max_period: float = 10000.0) -> jax.Array:
  """(B,) -> (B, dim): [cos(t w_k), sin(t w_k)] (or sin first), w_k = P^(-k / (dim/2 - shift))."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  sin, cos = jnp.sin(args), jnp.cos(args)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _conv(features: int, name: str, kernel: int = 3, stride: int = 1) -> nn.Conv:
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), ((pad, pad), (pad, pad)), name=name)


class ResnetBlock2D(nn.Module):
  """GN-SiLU-conv, + Dense(SiLU temb), GN-SiLU-conv, plus a 1x1 shortcut when widths differ."""
  out_channels: int
  groups: int
  eps: float

  @nn.compact
  def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
    norm = lambda name: nn.GroupNorm(self.groups, epsilon=self.eps, name=name)
    h = _conv(self.out_channels, 'conv1')(nn.silu(norm('norm1')(x)))
    h = h + nn.Dense(self.out_channels, name='time_emb_proj')(nn.silu(temb))[:, None, None]
    h = _conv(self.out_channels, 'conv2')(nn.silu(norm('norm2')(h)))
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 'conv_shortcut', kernel=1)(x)
    return x + h


class Attention(nn.Module):
  """softmax(Q K^T / sqrt(d)) V over heads; Q from (B, N, C), K, V from (B, L, C_kv)."""
  dim: int
  heads: int

  @nn.compact
  def __call__(self, h: jax.Array, kv: jax.Array) -> jax.Array:
    head_dim = self.dim // self.heads
    split = lambda name, src: nn.Dense(self.dim, use_bias=False, name=name)(src).reshape(
        *src.shape[:2], self.heads, head_dim)
    q, k, v = split('to_q', h), split('to_k', kv), split('to_v', kv)
    weights = jax.nn.softmax(jnp.einsum('bnhd,blhd->bhnl', q, k) * head_dim ** -0.5, axis=-1)
    out = jnp.einsum('bhnl,blhd->bnhd', weights, v).reshape(*h.shape[:2], self.dim)
    return nn.Dense(self.dim, name='to_out_0')(out)


class GEGLU(nn.Module):
  """a * GELU(g), (a, g) = split(W h): the gated first layer of the feed-forward."""
  features: int

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    a, gate = jnp.split(nn.Dense(2 * self.features, name='proj')(h), 2, axis=-1)
    return a * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
  """diffusers' names: ``net.0`` (GEGLU to 4 dim) and ``net.2`` (back to dim)."""
  dim: int

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    return nn.Dense(self.dim, name='net_2')(GEGLU(4 * self.dim, name='net_0')(h))


class BasicTransformerBlock(nn.Module):
  dim: int
  heads: int

  @nn.compact
  def __call__(self, h: jax.Array, context: jax.Array) -> jax.Array:
    norm = lambda name: nn.LayerNorm(epsilon=1e-5, name=name)
    x = norm('norm1')(h)
    h = h + Attention(self.dim, self.heads, name='attn1')(x, x)
    h = h + Attention(self.dim, self.heads, name='attn2')(norm('norm2')(h), context)
    return h + FeedForward(self.dim, name='ff')(norm('norm3')(h))


class TimestepEmbedding(nn.Module):
  features: int

  @nn.compact
  def __call__(self, emb: jax.Array) -> jax.Array:
    emb = nn.silu(nn.Dense(self.features, name='linear_1')(emb))
    return nn.Dense(self.features, name='linear_2')(emb)


class Transformer2DModel(nn.Module):
  """GN, proj_in (1x1 conv, or dense with ``linear``), transformer blocks, proj_out, + x."""
  dim: int
  heads: int
  layers: int
  groups: int
  linear: bool

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    b, height, width, channels = x.shape
    proj = (lambda name: nn.Dense(self.dim, name=name)) if self.linear else (
        lambda name: _conv(self.dim, name, kernel=1))
    h = proj('proj_in')(nn.GroupNorm(self.groups, epsilon=1e-6, name='norm')(x))
    h = h.reshape(b, height * width, self.dim)
    for i in range(self.layers):
      h = BasicTransformerBlock(self.dim, self.heads, name=f'transformer_blocks_{i}')(h, context)
    h = h.reshape(b, height, width, self.dim)
    return x + (nn.Dense(channels, name='proj_out') if self.linear else
                _conv(channels, 'proj_out', kernel=1))(h)


class _Down(nn.Module):
  """A CrossAttnDownBlock2D (``cross``) or DownBlock2D; returns h and the skips it adds."""
  out_channels: int
  layers: int
  cross: bool
  downsample: bool
  attn: dict  # Transformer2DModel fields but dim

  @nn.compact
  def __call__(self, h, temb, context):
    skips = []
    for i in range(self.layers):
      h = ResnetBlock2D(self.out_channels, self.attn['groups'], self.attn['eps'],
                        name=f'resnets_{i}')(h, temb)
      if self.cross:
        h = _transformer(self.out_channels, self.attn, f'attentions_{i}')(h, context)
      skips.append(h)
    if self.downsample:
      h = _Sample(self.out_channels, up=False, name='downsamplers_0')(h)
      skips.append(h)
    return h, skips


class _Up(nn.Module):
  """A CrossAttnUpBlock2D or UpBlock2D: each layer concatenates one skip (last in, first out)."""
  out_channels: int
  layers: int
  cross: bool
  upsample: bool
  attn: dict

  @nn.compact
  def __call__(self, h, skips, temb, context):
    for i in range(self.layers):
      h = jnp.concatenate([h, skips.pop()], axis=-1)
      h = ResnetBlock2D(self.out_channels, self.attn['groups'], self.attn['eps'],
                        name=f'resnets_{i}')(h, temb)
      if self.cross:
        h = _transformer(self.out_channels, self.attn, f'attentions_{i}')(h, context)
    if self.upsample:
      h = _Sample(self.out_channels, up=True, name='upsamplers_0')(h)
    return h


class _Mid(nn.Module):
  channels: int
  attn: dict

  @nn.compact
  def __call__(self, h, temb, context):
    resnet = lambda i: ResnetBlock2D(self.channels, self.attn['groups'], self.attn['eps'],
                                     name=f'resnets_{i}')
    h = resnet(0)(h, temb)
    h = _transformer(self.channels, self.attn, 'attentions_0')(h, context)
    return resnet(1)(h, temb)


class _Sample(nn.Module):
  """Downsample2D (3x3 conv, stride 2, padding 1) or Upsample2D (nearest x2, 3x3 conv)."""
  channels: int
  up: bool

  @nn.compact
  def __call__(self, h):
    if self.up:
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
      return _conv(self.channels, 'conv')(h)
    return _conv(self.channels, 'conv', stride=2)(h)


def _transformer(channels: int, attn: dict, name: str) -> Transformer2DModel:
  return Transformer2DModel(channels, attn['heads'], attn['layers'], attn['groups'],
                            attn['linear'], name=name)


class UNet2DConditionModel(nn.Module):
  """``(x (B, H, W, C_in), t (B,), context (B, L, cross_attention_dim)) -> (B, H, W, C_out)``.

  ``num_heads`` is heads per block (an int for all); diffusers' SD 1.x/2.x configs call it
  ``attention_head_dim`` (8 for SD 1.x: 8 heads of 40..160 channels; (5, 10, 20, 20) for SD 2.x:
  64-channel heads). H and W must be divisible by 2^(number of blocks - 1).
  """
  in_channels: int = 4
  out_channels: int = 4
  block_out_channels: Sequence[int] = (320, 640, 1280, 1280)
  down_block_types: Sequence[str] = (CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN)
  up_block_types: Sequence[str] = (PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP)
  layers_per_block: int = 2
  cross_attention_dim: int = 768
  num_heads: int | Sequence[int] = 8
  transformer_layers_per_block: int = 1
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  use_linear_projection: bool = False
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  context_length: int = 77   # L of the contexts it is given (no parameter depends on it)

  def _attn(self, block: int) -> dict:
    heads = self.num_heads if isinstance(self.num_heads, int) else self.num_heads[block]
    return dict(heads=heads, layers=self.transformer_layers_per_block,
                groups=self.norm_num_groups, eps=self.norm_eps,
                linear=self.use_linear_projection)

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, context: jax.Array,
               train: bool = False, class_emb: jax.Array | None = None) -> jax.Array:
    """``class_emb`` (B, 4 C_0), if given, is added to the time embedding (diffusers'
    ``class_embed_type='identity'``, through which unCLIP's decoder adds its projected image
    embedding); it adds no parameters."""
    del train   # no dropout: the same call as every score network's (models/__init__.py)
    channels = tuple(self.block_out_channels)
    last = len(channels) - 1
    temb = timestep_embedding(jnp.broadcast_to(t, x.shape[:1]), channels[0],
                              self.flip_sin_to_cos, self.freq_shift)
    temb = TimestepEmbedding(4 * channels[0], name='time_embedding')(temb)
    if class_emb is not None:
      temb = temb + class_emb
    h = _conv(channels[0], 'conv_in')(x)
    skips = [h]
    for i, kind in enumerate(self.down_block_types):
      h, added = _Down(channels[i], self.layers_per_block, kind == CROSS_DOWN, i < last,
                       self._attn(i), name=f'down_blocks_{i}')(h, temb, context)
      skips += added
    h = _Mid(channels[-1], self._attn(last), name='mid_block')(h, temb, context)
    for i, kind in enumerate(self.up_block_types):
      h = _Up(channels[last - i], self.layers_per_block + 1, kind == CROSS_UP, i < last,
              self._attn(last - i), name=f'up_blocks_{i}')(h, skips, temb, context)
    h = nn.silu(nn.GroupNorm(self.norm_num_groups, epsilon=self.norm_eps,
                             name='conv_norm_out')(h))
    return _conv(self.out_channels, 'conv_out')(h)


PRESETS = {
    'sd1': dict(),
    'sd2': dict(num_heads=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True),
    'tiny': dict(block_out_channels=(32, 64), down_block_types=(CROSS_DOWN, PLAIN_DOWN),
                 up_block_types=(PLAIN_UP, CROSS_UP), layers_per_block=1, cross_attention_dim=32,
                 num_heads=2, norm_num_groups=8),
}


def from_preset(name: str, **overrides) -> UNet2DConditionModel:
  if name not in PRESETS:
    raise ConfigError(f'Unknown conditional UNet preset {name!r}; valid: {sorted(PRESETS)}.')
  return UNet2DConditionModel(**{**PRESETS[name], **overrides})


def from_config(config) -> nn.Module:
  """``build(config)`` wrapped as ``model.precond`` asks (Stable Diffusion's own weights:
  'paper', the eps network of 999 t)."""
  return precond.wrap(config, build(config), 'positional')


def build(config) -> UNet2DConditionModel:
  """``model.unet_preset`` with the data's channels, ``model.context_dim`` (None: the preset's
  cross_attention_dim) and ``model.context_length``; ``model.unet_channels`` (None: the
  preset's) replaces block_out_channels, keeping the preset's block types for that many blocks
  (cross-attention in all but the lowest resolution, as SD)."""
  m, channels = config.model, config.data.num_channels
  overrides = dict(in_channels=channels, out_channels=channels,
                   context_length=int(m.context_length))
  if m.context_dim is not None:
    overrides['cross_attention_dim'] = int(m.context_dim)
  if m.unet_channels is not None:
    blocks = tuple(int(c) for c in m.unet_channels)
    n = len(blocks)
    overrides.update(block_out_channels=blocks,
                     down_block_types=(CROSS_DOWN,) * (n - 1) + (PLAIN_DOWN,),
                     up_block_types=(PLAIN_UP,) + (CROSS_UP,) * (n - 1))
  return from_preset(m.unet_preset, **overrides)


def param_shapes(model: UNet2DConditionModel, context_length: int = 77) -> Any:
  """The params tree of ``model`` as ShapeDtypeStructs (nothing is computed)."""
  size = 2 ** (len(model.block_out_channels) - 1)
  x = jnp.zeros((1, size, size, model.in_channels))
  context = jnp.zeros((1, context_length, model.cross_attention_dim))
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, jnp.zeros(1), context))[
      'params']
