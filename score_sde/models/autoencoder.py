"""The KL autoencoder of latent diffusion (Rombach et al. 2022), in diffusers' ``AutoencoderKL``
layout, so that published weights (``stabilityai/sd-vae-ft-mse``, ...) load through
``models.convert_autoencoder``.

Images x: (B, H, W, in_channels) in [-1, 1] (NHWC; diffusers is NCHW). With L = len(block_out_channels):

  encoder:  conv_in -> L down blocks (layers_per_block ResNet blocks each, a stride-2
            convolution after all but the last) -> mid block (ResNet, self-attention, ResNet)
            -> GroupNorm, SiLU -> conv_out to 2 latent_channels
  moments = quant_conv(encoder(x)): (B, H / 2^(L-1), W / 2^(L-1), 2 latent_channels), the mean
            and log-variance of the diagonal Gaussian posterior q(z | x)
  decoder:  post_quant_conv -> conv_in -> mid block -> L up blocks (layers_per_block + 1 ResNet
            blocks each, nearest x2 + 3x3 convolution after all but the last) -> GroupNorm, SiLU
            -> conv_out to out_channels

The diffusion model works on z_scaled = scaling_factor (z - shift_factor) (``to_latents``), which
has about unit variance for the published autoencoders (SD 1.x: 0.18215, no shift);
``from_latents`` undoes it before decoding. ``SD1`` is the SD 1.x configuration.

Parameter names follow diffusers' state dict with the list index joined by '_'
(``encoder.down_blocks.0.resnets.1.conv1.weight`` -> ``encoder/down_blocks_0/resnets_1/conv1/kernel``).
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.errors import DataError

EPS = 1e-6  # every GroupNorm of the autoencoder (diffusers' resnet_eps)


def group_norm(groups: int, name: str) -> nn.GroupNorm:
  # Two-pass variance: the one-pass E[x^2] - E[x]^2 loses digits on large activations.
  return nn.GroupNorm(num_groups=groups, epsilon=EPS, use_fast_variance=False, name=name)


def conv(features: int, size: int, name: str, stride: int = 1, padding='SAME') -> nn.Conv:
  return nn.Conv(features, (size, size), strides=(stride, stride), padding=padding, name=name)


class ResnetBlock2D(nn.Module):
  """h = conv2(SiLU(norm2(conv1(SiLU(norm1(x)))))); out = shortcut(x) + h, the shortcut a 1x1
  convolution where the channel count changes. (B, H, W, C) -> (B, H, W, out_channels)."""
  out_channels: int
  norm_num_groups: int = 32
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.silu(group_norm(self.norm_num_groups, 'norm1')(x))
    h = conv(self.out_channels, 3, 'conv1')(h)
    h = nn.silu(group_norm(self.norm_num_groups, 'norm2')(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv(self.out_channels, 3, 'conv2')(h)
    if x.shape[-1] != self.out_channels:
      x = conv(self.out_channels, 1, 'conv_shortcut')(x)
    return x + h


class Attention(nn.Module):
  """Single-head self-attention over the H W positions, width C, with a residual:
  x + to_out(softmax(q k^T / sqrt(C)) v), q, k, v = to_q, to_k, to_v (GroupNorm(x))."""
  norm_num_groups: int = 32

  @nn.compact
  def __call__(self, x):
    b, height, width, c = x.shape
    h = group_norm(self.norm_num_groups, 'group_norm')(x).reshape(b, height * width, c)
    q, k, v = (nn.Dense(c, name=name)(h) for name in ('to_q', 'to_k', 'to_v'))
    logits = jnp.einsum('bqc,bkc->bqk', q, k) / jnp.sqrt(jnp.float32(c))
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    h = nn.Dense(c, name='to_out_0')(jnp.einsum('bqk,bkc->bqc', weights, v))
    return x + h.reshape(x.shape)


class Downsample2D(nn.Module):
  """Halve H and W: pad one row at the bottom and one column at the right, then a 3x3 stride-2
  convolution without padding (the original LDM code's asymmetric pad, which diffusers keeps)."""
  channels: int

  @nn.compact
  def __call__(self, x):
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return conv(self.channels, 3, 'conv', stride=2, padding='VALID')(x)


class Upsample2D(nn.Module):
  """Double H and W: nearest-neighbour x2, then a 3x3 convolution."""
  channels: int

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(self.channels, 3, 'conv')(x)


class MidBlock(nn.Module):
  """ResNet block, self-attention (unless ``add_attention`` is False), ResNet block; width kept."""
  norm_num_groups: int = 32
  add_attention: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    resnet = functools.partial(ResnetBlock2D, x.shape[-1], self.norm_num_groups)
    x = resnet(name='resnets_0')(x, train)
    if self.add_attention:
      x = Attention(self.norm_num_groups, name='attentions_0')(x)
    return resnet(name='resnets_1')(x, train)


def resnets(x, num: int, out_channels: int, groups: int, train: bool):
  """``num`` ResNet blocks ``resnets_0..`` in the caller's scope."""
  for i in range(num):
    x = ResnetBlock2D(out_channels, groups, name=f'resnets_{i}')(x, train)
  return x


class CoderFields(nn.Module):
  """The fields the encoder and the decoder share."""
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  mid_block_add_attention: bool = True


class Encoder(CoderFields):
  """(B, H, W, in_channels) -> (B, H / 2^(L-1), W / 2^(L-1), 2 latent_channels)."""
  latent_channels: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = conv(self.block_out_channels[0], 3, 'conv_in')(x)
    last = len(self.block_out_channels) - 1
    for i, channels in enumerate(self.block_out_channels):
      h = Stage(channels, self.layers_per_block, self.norm_num_groups,
                'down' if i != last else None, name=f'down_blocks_{i}')(h, train)
    h = MidBlock(self.norm_num_groups, self.mid_block_add_attention, name='mid_block')(h, train)
    h = nn.silu(group_norm(self.norm_num_groups, 'conv_norm_out')(h))
    return conv(2 * self.latent_channels, 3, 'conv_out')(h)


class Stage(nn.Module):
  """diffusers' DownEncoderBlock2D (``resample='down'``) or UpDecoderBlock2D (``'up'``): ResNet
  blocks, then a resampler unless ``resample`` is None (the last stage)."""
  out_channels: int
  num_layers: int
  norm_num_groups: int
  resample: str | None

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = resnets(x, self.num_layers, self.out_channels, self.norm_num_groups, train)
    if self.resample == 'down':
      return Downsample2D(self.out_channels, name='downsamplers_0')(x)
    if self.resample == 'up':
      return Upsample2D(self.out_channels, name='upsamplers_0')(x)
    return x


class Decoder(CoderFields):
  """(B, h, w, latent_channels) -> (B, h 2^(L-1), w 2^(L-1), out_channels)."""
  out_channels: int = 3

  @nn.compact
  def __call__(self, z, train: bool = False):
    h = conv(self.block_out_channels[-1], 3, 'conv_in')(z)
    h = MidBlock(self.norm_num_groups, self.mid_block_add_attention, name='mid_block')(h, train)
    last = len(self.block_out_channels) - 1
    for i, channels in enumerate(reversed(self.block_out_channels)):
      h = Stage(channels, self.layers_per_block + 1, self.norm_num_groups,
                'up' if i != last else None, name=f'up_blocks_{i}')(h, train)
    h = nn.silu(group_norm(self.norm_num_groups, 'conv_norm_out')(h))
    return conv(self.out_channels, 3, 'conv_out')(h)


class DiagonalGaussian(NamedTuple):
  """q(z | x) = N(mean, exp(logvar)) per latent entry; ``moments`` (..., 2 c) split on the last
  axis, the log-variance clipped to [-30, 20] as in the LDM code."""
  mean: jax.Array
  logvar: jax.Array

  @classmethod
  def from_moments(cls, moments: jax.Array) -> 'DiagonalGaussian':
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return cls(mean, jnp.clip(logvar, -30.0, 20.0))

  def sample(self, rng) -> jax.Array:
    return self.mean + jnp.exp(0.5 * self.logvar) * jax.random.normal(rng, self.mean.shape)

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self) -> jax.Array:
    """KL(q || N(0, I)) per example, summed over the latent: (B,)."""
    terms = self.mean**2 + jnp.exp(self.logvar) - 1.0 - self.logvar
    return 0.5 * jnp.sum(terms, axis=tuple(range(1, terms.ndim)))


class AutoencoderKL(nn.Module):
  """The KL-regularised autoencoder. ``encode(x) -> moments``, ``decode(z) -> x``,
  ``__call__(x, rng) -> (reconstruction, posterior)`` (z sampled with ``rng``, else the mean)."""
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  latent_channels: int = 4
  norm_num_groups: int = 32
  scaling_factor: float = 0.18215
  shift_factor: float = 0.0
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True

  def setup(self):
    shared = dict(block_out_channels=tuple(self.block_out_channels),
                  layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups,
                  mid_block_add_attention=self.mid_block_add_attention)
    self.encoder = Encoder(latent_channels=self.latent_channels, **shared)
    self.decoder = Decoder(out_channels=self.out_channels, **shared)
    if self.use_quant_conv:
      self.quant_conv = nn.Conv(2 * self.latent_channels, (1, 1))
    if self.use_post_quant_conv:
      self.post_quant_conv = nn.Conv(self.latent_channels, (1, 1))

  @property
  def downsampling(self) -> int:
    """The spatial factor image size / latent size, 2^(L-1)."""
    return 2**(len(self.block_out_channels) - 1)

  def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """(H, W, C) of an image -> (h, w, latent_channels) of its latent."""
    height, width = image_shape[:2]
    return height // self.downsampling, width // self.downsampling, self.latent_channels

  def _check(self, x, channels: int, what: str, divisor: int):
    if x.ndim != 4 or x.shape[-1] != channels or x.shape[1] % divisor or x.shape[2] % divisor:
      raise DataError(f'The autoencoder expects {what} (B, H, W, {channels}) with H, W divisible '
                      f'by {divisor}; got shape {tuple(x.shape)}.')

  def encode(self, x, train: bool = False) -> jax.Array:
    """Images (B, H, W, in_channels) in [-1, 1] -> posterior moments (B, h, w, 2 latent_channels)."""
    self._check(x, self.in_channels, 'images', self.downsampling)
    moments = self.encoder(x, train)
    return self.quant_conv(moments) if self.use_quant_conv else moments

  def decode(self, z, train: bool = False) -> jax.Array:
    """Latents (B, h, w, latent_channels) (unscaled) -> images (B, H, W, out_channels)."""
    self._check(z, self.latent_channels, 'latents', 1)
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z, train)

  def __call__(self, x, rng=None, train: bool = False):
    posterior = DiagonalGaussian.from_moments(self.encode(x, train))
    z = posterior.mode() if rng is None else posterior.sample(rng)
    return self.decode(z, train), posterior

  def to_latents(self, x, rng=None) -> jax.Array:
    """Images -> the diffusion model's latents scaling_factor (z - shift_factor), z sampled from
    q(z | x) with ``rng``, else its mean."""
    posterior = DiagonalGaussian.from_moments(self.encode(x))
    z = posterior.mode() if rng is None else posterior.sample(rng)
    return self.scaling_factor * (z - self.shift_factor)

  def from_latents(self, latents) -> jax.Array:
    """The diffusion model's latents -> decoded images (inverse scaling, then ``decode``)."""
    return self.decode(latents / self.scaling_factor + self.shift_factor)


# The Stable Diffusion 1.x / 2.x autoencoder (stabilityai/sd-vae-ft-mse, ...).
SD1 = functools.partial(AutoencoderKL, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, norm_num_groups=32,
                        scaling_factor=0.18215)
