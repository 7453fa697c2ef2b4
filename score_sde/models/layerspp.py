"""Layers of NCSN++ / DDPM++ (Song et al. 2021, App. H), NHWC.

Class names and sub-module creation order follow the paper's code so that parameter trees match
its checkpoints. `skip_rescale` divides every residual sum by sqrt(2); `init_scale` scales the
initialisation of the last layer of each residual branch (0 -> ~zero-initialised branches).
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import math

from score_sde.errors import ConfigError
from score_sde.models import up_or_down_sampling as ups
from score_sde.models.layers import (NIN, ddpm_conv1x1 as conv1x1, ddpm_conv3x3 as conv3x3,
                                     default_init, group_norm, spatial_attention)

COMBINE_METHODS = ('cat', 'sum')


def residual_sum(x, h, skip_rescale: bool):
  """x + h, divided by sqrt(2) with skip_rescale (keeps the variance of the sum)."""
  # A Python float: a NumPy scalar would promote bf16 activations to float32.
  return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class Combine(nn.Module):
  """Merge a pyramid branch x into h: 1x1 conv of x to h's channels, then concat or sum."""
  method: str = 'cat'

  @nn.compact
  def __call__(self, x, y):
    if self.method not in COMBINE_METHODS:
      raise ConfigError(f'Unknown progressive_combine {self.method!r}; valid: {COMBINE_METHODS}.')
    h = conv1x1(x, y.shape[-1])
    return jnp.concatenate([h, y], axis=-1) if self.method == 'cat' else h + y


def _nin(num_units, init_scale):
  return NIN(num_units, init_scale=init_scale)


class AttnBlockpp(nn.Module):
  """Residual self-attention over pixels with GroupNorm, init_scale and skip_rescale."""
  skip_rescale: bool = False
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x):
    h = spatial_attention(x, group_norm(x), _nin, init_scale=self.init_scale)
    return residual_sum(x, h, self.skip_rescale)


class CrossAttnBlockpp(nn.Module):
  """Residual cross-attention from the pixels to a context sequence (not in the paper's code).

  x: (B, H, W, C), context: (B, L, D) -> (B, H, W, C). With h = GroupNorm(x), per head n of
  N (d = C / N channels each):

      q = NIN(h) (B, H, W, C),  k = NIN(context), v = NIN(context) (B, L, C)
      a_n = softmax_l(q_n . k_{n,l} / sqrt(d)) v_{n,l}                  (B, H, W, d)
      out = x + NIN_0(concat_n a_n)

  NIN_0 is initialised at (near) zero (init_scale 0, as AttnBlockpp's output), and the sum is
  plain, not divided by sqrt(2) under skip_rescale: at initialisation the block is the identity,
  so a network with it computes what the same network without it does.
  """
  num_heads: int = 1

  @nn.compact
  def __call__(self, x, context):
    B, H, W, C = x.shape
    if C % self.num_heads:
      raise ConfigError(f'{C} channels do not split into {self.num_heads} attention heads.')
    d = C // self.num_heads
    h = group_norm(x)
    context = context.astype(x.dtype)
    q = NIN(C, init_scale=0.1)(h).reshape(B, H * W, self.num_heads, d)
    k = NIN(C, init_scale=0.1)(context).reshape(B, -1, self.num_heads, d)
    v = NIN(C, init_scale=0.1)(context).reshape(B, -1, self.num_heads, d)
    w = jnp.einsum('bpnd,blnd->bnpl', q, k) * d**-0.5
    w = jax.nn.softmax(w.astype(jnp.float32), axis=-1).astype(x.dtype)
    a = jnp.einsum('bnpl,blnd->bpnd', w, v).reshape(B, H, W, C)
    return x + NIN(C, init_scale=0.0)(a)


class Upsample(nn.Module):
  """2x upsampling: nearest (+ 3x3 conv) or FIR (+ fused 3x3 conv); optionally to out_ch channels."""
  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    out_ch = self.out_ch or C
    if not self.fir:
      h = jax.image.resize(x, (B, 2 * H, 2 * W, C), 'nearest')
      return conv3x3(h, out_ch) if self.with_conv else h
    if not self.with_conv:
      return ups.upsample_2d(x, self.fir_kernel, factor=2)
    return ups.Conv2d(out_ch, kernel=3, up=True, resample_kernel=tuple(self.fir_kernel),
                      use_bias=True, kernel_init=default_init())(x)


class Downsample(nn.Module):
  """2x downsampling: avg-pool / stride-2 3x3 conv, or FIR (+ fused 3x3 conv)."""
  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if not self.fir:
      if self.with_conv:
        return conv3x3(x, out_ch, stride=2)
      return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding='SAME')
    if not self.with_conv:
      return ups.downsample_2d(x, self.fir_kernel, factor=2)
    return ups.Conv2d(out_ch, kernel=3, down=True, resample_kernel=tuple(self.fir_kernel),
                      use_bias=True, kernel_init=default_init())(x)


def _time_bias(h, temb, act, out_ch):
  """Add Dense(act(temb)) as a per-channel bias: temb (B, E) -> (B, 1, 1, out_ch)."""
  if temb is None:
    return h
  return h + nn.Dense(out_ch, kernel_init=default_init(), dtype=h.dtype)(
      act(temb))[:, None, None, :]


class ResnetBlockDDPMpp(nn.Module):
  """DDPM's residual block with GroupNorm(min(C/4, 32)), init_scale and skip_rescale."""
  act: Callable[[jax.Array], jax.Array]
  out_ch: int | None = None
  conv_shortcut: bool = False
  dropout: float = 0.1
  skip_rescale: bool = False
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x, temb=None, train: bool = True):
    C = x.shape[-1]
    out_ch = self.out_ch or C
    h = conv3x3(self.act(group_norm(x)), out_ch)
    h = _time_bias(h, temb, self.act, out_ch)
    h = self.act(group_norm(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if C != out_ch:
      x = conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
    return residual_sum(x, h, self.skip_rescale)


class ResnetBlockBigGANpp(nn.Module):
  """BigGAN-style residual block that can itself up- or down-sample both branches by 2."""
  act: Callable[[jax.Array], jax.Array]
  up: bool = False
  down: bool = False
  out_ch: int | None = None
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0

  def _resample(self, x):
    if self.up:
      return (ups.upsample_2d(x, self.fir_kernel, factor=2) if self.fir
              else ups.naive_upsample_2d(x, factor=2))
    if self.down:
      return (ups.downsample_2d(x, self.fir_kernel, factor=2) if self.fir
              else ups.naive_downsample_2d(x, factor=2))
    return x

  @nn.compact
  def __call__(self, x, temb=None, train: bool = True):
    C = x.shape[-1]
    out_ch = self.out_ch or C
    h = self._resample(self.act(group_norm(x)))
    x = self._resample(x)
    h = conv3x3(h, out_ch)
    h = _time_bias(h, temb, self.act, out_ch)
    h = self.act(group_norm(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = conv3x3(h, out_ch, init_scale=self.init_scale)
    if C != out_ch or self.up or self.down:
      x = conv1x1(x, out_ch)
    return residual_sum(x, h, self.skip_rescale)
