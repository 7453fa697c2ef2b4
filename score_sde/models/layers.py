"""Layers shared by DDPM, NCSN++ and NCSNv2 (NHWC arrays).

Module class names and the order in which each module creates its sub-modules follow the paper's
code (yang-song/score_sde), because Flax names parameters after them (`Conv_0`, `NIN_1`,
`ResnetBlockDDPM_3`, ...): that is what lets the paper's checkpoints load here.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError, DataError

ACTIVATIONS = {
    'elu': nn.elu,
    'relu': nn.relu,
    'lrelu': functools.partial(nn.leaky_relu, negative_slope=0.2),
    'swish': nn.swish,
}


def get_act(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation called `name` (case-insensitive)."""
  if name.lower() not in ACTIVATIONS:
    raise ConfigError(f'Unknown nonlinearity {name!r}; valid: {sorted(ACTIVATIONS)}.')
  return ACTIVATIONS[name.lower()]


def default_init(scale: float = 1.0):
  """DDPM's initialiser: variance scaling (fan_avg, uniform); scale 0 means 1e-10 (near zero)."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, 'fan_avg', 'uniform')


def ddpm_conv(x, out_ch: int, size: int, stride: int = 1, bias: bool = True,
              dilation: int = 1, init_scale: float = 1.0):
  """A size x size 'SAME' convolution with DDPM initialisation, created in the caller's scope."""
  return nn.Conv(out_ch, kernel_size=(size, size), strides=(stride, stride), padding='SAME',
                 use_bias=bias, kernel_dilation=(dilation, dilation),
                 kernel_init=default_init(init_scale), bias_init=nn.initializers.zeros,
                 dtype=x.dtype)(x)


ddpm_conv1x1 = functools.partial(ddpm_conv, size=1)
ddpm_conv3x3 = functools.partial(ddpm_conv, size=3)


def ncsn_conv(x, out_ch: int, size: int, stride: int = 1, bias: bool = True,
              dilation: int = 1, init_scale: float = 1.0):
  """A size x size 'SAME' convolution with PyTorch's default initialisation (NCSNv1/v2)."""
  kernel_init = nn.initializers.variance_scaling(
      (1e-10 if init_scale == 0 else init_scale) / 3, 'fan_in', 'uniform')
  kernel_shape = (size, size, x.shape[-1], out_ch)
  bias_init = lambda key, shape, dtype=jnp.float32: kernel_init(key, kernel_shape, dtype)[0, 0, 0]
  return nn.Conv(out_ch, kernel_size=(size, size), strides=(stride, stride), padding='SAME',
                 use_bias=bias, kernel_dilation=(dilation, dilation),
                 kernel_init=kernel_init, bias_init=bias_init, dtype=x.dtype)(x)


ncsn_conv1x1 = functools.partial(ncsn_conv, size=1)
ncsn_conv3x3 = functools.partial(ncsn_conv, size=3)


def group_norm(x):
  """GroupNorm with min(C // 4, 32) groups (NCSN++), created in the caller's scope."""
  return nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), dtype=x.dtype)(x)


class NIN(nn.Module):
  """Network-in-network: a per-pixel linear map (..., C) -> (..., num_units), params W, b."""
  num_units: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, x):
    W = self.param('W', default_init(self.init_scale), (x.shape[-1], self.num_units))
    b = self.param('b', nn.initializers.zeros, (self.num_units,))
    return jnp.tensordot(x, W.astype(x.dtype), axes=1) + b.astype(x.dtype)


def spatial_attention(x, h, make_nin: Callable[[int, float], nn.Module], init_scale: float):
  """Single-head self-attention over the H*W pixels of the normalised h; returns the update.

  softmax_j(q_i . k_j / sqrt(C)) v_j, then a zero-initialised (init_scale) NIN projection.
  """
  B, H, W, C = x.shape
  q, k, v = make_nin(C, 0.1)(h), make_nin(C, 0.1)(h), make_nin(C, 0.1)(h)
  w = jnp.einsum('bhwc,bHWc->bhwHW', q, k).reshape(B, H, W, H * W) * C**-0.5
  w = jax.nn.softmax(w.astype(jnp.float32), axis=-1).astype(x.dtype).reshape(B, H, W, H, W)
  return make_nin(C, init_scale)(jnp.einsum('bhwHW,bHWc->bhwc', w, v))


def _nin(num_units, init_scale):
  return NIN(num_units, init_scale=init_scale)


class AttnBlock(nn.Module):
  """DDPM's residual self-attention block: x + attention(normalize(x))."""
  normalize: Callable[[], nn.Module]

  @nn.compact
  def __call__(self, x):
    return x + spatial_attention(x, self.normalize(dtype=x.dtype)(x), _nin, init_scale=0.0)


class Upsample(nn.Module):
  """DDPM: nearest-neighbour 2x upsampling, then optionally a 3x3 convolution."""
  with_conv: bool = False

  @nn.compact
  def __call__(self, x):
    B, H, W, C = x.shape
    h = jax.image.resize(x, (B, 2 * H, 2 * W, C), 'nearest')
    return ddpm_conv3x3(h, C) if self.with_conv else h


class Downsample(nn.Module):
  """DDPM: a stride-2 3x3 convolution, or 2x2 average pooling."""
  with_conv: bool = False

  @nn.compact
  def __call__(self, x):
    if self.with_conv:
      return ddpm_conv3x3(x, x.shape[-1], stride=2)
    return nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2), padding='SAME')


class ResnetBlockDDPM(nn.Module):
  """DDPM's residual block: x + conv(drop(act(norm(conv(act(norm(x))) + Dense(temb)))))."""
  act: Callable[[jax.Array], jax.Array]
  normalize: Callable[[], nn.Module]
  out_ch: int | None = None
  conv_shortcut: bool = False
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, temb=None, train: bool = True):
    C = x.shape[-1]
    out_ch = self.out_ch or C
    h = ddpm_conv3x3(self.act(self.normalize(dtype=x.dtype)(x)), out_ch)
    if temb is not None:
      h += nn.Dense(out_ch, kernel_init=default_init(), dtype=h.dtype)(
          self.act(temb))[:, None, None, :]
    h = self.act(self.normalize(dtype=h.dtype)(h))
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    h = ddpm_conv3x3(h, out_ch, init_scale=0.0)
    if C != out_ch:
      x = ddpm_conv3x3(x, out_ch) if self.conv_shortcut else NIN(out_ch)(x)
    return x + h


# ----------------------------------------------------------------------------------------------
# RefineNet blocks of NCSNv2 (Song & Ermon 2020).


class CRPBlock(nn.Module):
  """Chained residual pooling: x <- act(x); repeatedly path = conv(maxpool5(path)); x += path."""
  features: int
  n_stages: int
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x):
    x = self.act(x)
    path = x
    for _ in range(self.n_stages):
      path = nn.max_pool(path, window_shape=(5, 5), strides=(1, 1), padding='SAME')
      path = ncsn_conv3x3(path, self.features, bias=False)
      x = path + x
    return x


class RCUBlock(nn.Module):
  """Residual conv units: n_blocks times x += (act, conv) x n_stages."""
  features: int
  n_blocks: int
  n_stages: int
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x):
    for _ in range(self.n_blocks):
      residual = x
      for _ in range(self.n_stages):
        x = ncsn_conv3x3(self.act(x), self.features, bias=False)
      x = x + residual
    return x


INTERPOLATIONS = {'bilinear': 'bilinear', 'nearest_neighbor': 'nearest'}


class MSFBlock(nn.Module):
  """Multi-resolution fusion: sum of convs of every input, each resized to `shape`."""
  shape: Sequence[int]
  features: int
  interpolation: str = 'bilinear'

  @nn.compact
  def __call__(self, xs):
    if self.interpolation not in INTERPOLATIONS:
      raise ConfigError(f'Unknown interpolation {self.interpolation!r}; '
                        f'valid: {sorted(INTERPOLATIONS)}.')
    out = 0.0
    for x in xs:
      h = ncsn_conv3x3(x, self.features)
      out = out + jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]),
                                   INTERPOLATIONS[self.interpolation])
    return out


class RefineBlock(nn.Module):
  """RefineNet block: RCU on each input, fuse (MSF) unless `start`, CRP, output RCU."""
  output_shape: Sequence[int]
  features: int
  act: Callable = nn.relu
  interpolation: str = 'bilinear'
  start: bool = False
  end: bool = False

  @nn.compact
  def __call__(self, xs):
    hs = [RCUBlock(x.shape[-1], n_blocks=2, n_stages=2, act=self.act)(x) for x in xs]
    if self.start:
      h = hs[0]
    else:
      h = MSFBlock(tuple(self.output_shape), self.features, self.interpolation)(hs)
    h = CRPBlock(self.features, n_stages=2, act=self.act)(h)
    return RCUBlock(self.features, n_blocks=3 if self.end else 1, n_stages=2, act=self.act)(h)


def _mean_pool(x):
  return (x[:, ::2, ::2] + x[:, 1::2, ::2] + x[:, ::2, 1::2] + x[:, 1::2, 1::2]) / 4.0


class ConvMeanPool(nn.Module):
  """Convolution then 2x2 mean pooling."""
  output_dim: int
  kernel_size: int = 3
  biases: bool = True

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    return _mean_pool(nn.Conv(self.output_dim, (k, k), padding='SAME', use_bias=self.biases,
                              dtype=x.dtype)(x))


class ResidualBlock(nn.Module):
  """NCSNv2's ResNet block; `resample='down'` halves the resolution (or dilates if dilation > 1)."""
  output_dim: int
  normalization: Callable[[], nn.Module]
  resample: str | None = None
  act: Callable = nn.elu
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    if self.resample not in (None, 'down'):
      raise ConfigError(f"Unknown resample {self.resample!r}; valid: None, 'down'.")
    d = self.dilation
    h = self.act(self.normalization(dtype=x.dtype)(x))
    if self.resample == 'down':
      h = ncsn_conv3x3(h, h.shape[-1], dilation=d)
      h = self.act(self.normalization(dtype=h.dtype)(h))
      if d > 1:
        h = ncsn_conv3x3(h, self.output_dim, dilation=d)
        shortcut = ncsn_conv3x3(x, self.output_dim, dilation=d)
      else:
        h = ConvMeanPool(self.output_dim)(h)
        shortcut = ConvMeanPool(self.output_dim, kernel_size=1)(x)
      return h + shortcut
    if self.output_dim == x.shape[-1]:
      shortcut = x
    elif d > 1:
      shortcut = ncsn_conv3x3(x, self.output_dim, dilation=d)
    else:
      shortcut = ncsn_conv1x1(x, self.output_dim)
    h = ncsn_conv3x3(h, self.output_dim, dilation=d)
    h = self.act(self.normalization(dtype=h.dtype)(h))
    h = ncsn_conv3x3(h, self.output_dim, dilation=d)
    return h + shortcut


def check_image_input(x, num_channels: int, divisor: int, name: str):
  """Raise a clear ValueError unless x is (B, H, W, num_channels) with H, W divisible by divisor."""
  if x.ndim != 4:
    raise DataError(f'{name} expects images (B, H, W, C); got shape {x.shape}.')
  if x.shape[-1] != num_channels:
    raise DataError(f'{name} was built for {num_channels} channels; got input shape {x.shape}.')
  if x.shape[1] % divisor or x.shape[2] % divisor:
    raise DataError(f'{name} downsamples by {divisor}: image size {x.shape[1:3]} must be '
                    f'divisible by {divisor}.')


def check_image_size(image_size: int | None, divisor: int, name: str) -> None:
  """ConfigError unless ``data.image_size`` is a multiple of the network's total downsampling."""
  if image_size is not None and (image_size < divisor or image_size % divisor):
    raise ConfigError(f'data.image_size = {image_size}: {name} halves the resolution down to '
                      f'1/{divisor}, so the image size must be a multiple of {divisor} (e.g. '
                      f'{max(divisor, image_size // divisor * divisor)}); or change model.ch_mult.')


def sigma_table(sigma_min: float, sigma_max: float, num_scales: int) -> np.ndarray:
  """The SMLD noise levels, largest first: exp(linspace(log sigma_max, log sigma_min, N))."""
  return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))
