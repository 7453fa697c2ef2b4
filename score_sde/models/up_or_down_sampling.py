"""FIR up/down-sampling of NHWC images (StyleGAN2's resampling, as NCSN++ uses it).

All operations here are `upfirdn`: insert (up - 1) zeros between pixels, pad, convolve every
channel with a normalised 2-D FIR filter k, keep every down-th pixel. With k = (1, 3, 3, 1) (the
paper's `fir_kernel`) this is a smooth, alias-reducing 2x resampling; with k = (1, 1) it reduces to
nearest-neighbour upsampling / 2x2 average pooling.

The fused `Conv2d(up=True | down=True)` applies a learned 3x3 convolution and the FIR resampling
with a single padding, exactly as the paper's code does, so its checkpoints give the same outputs.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError

_DIMS = ('NHWC', 'HWIO', 'NHWC')


def setup_kernel(k: Sequence[float]) -> np.ndarray:
  """A separable 1-D filter (or a 2-D one) -> 2-D filter normalised to sum 1."""
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  return k / np.sum(k)


def upfirdn_2d(x: jax.Array, k: np.ndarray, up: int = 1, down: int = 1,
               pad0: int = 0, pad1: int = 0) -> jax.Array:
  """Zero-insert by `up`, pad by (pad0, pad1) on both spatial axes, convolve with k, keep every `down`.

  x: (B, H, W, C); k: (kh, kw). Output side: (H * up + pad0 + pad1 - kh) // down + 1.
  """
  batch, height, width, channels = x.shape
  # A true convolution (not correlation): flip the filter.
  w = jnp.asarray(k[::-1, ::-1], x.dtype)[:, :, None, None]
  # Channels moved into the batch, one single-channel convolution (as the paper's upfirdn2d):
  # 4x faster forward + backward on CPU than a depthwise (feature-grouped) convolution with
  # lhs_dilation, and equal to float32 rounding (benchmarks/RESULTS.md, Training step).
  y = jnp.transpose(x, (0, 3, 1, 2)).reshape(batch * channels, height, width, 1)
  # lhs_dilation inserts up - 1 zeros between pixels but not after the last one: pad those too.
  padding = [(pad0, pad1 + up - 1)] * 2
  y = jax.lax.conv_general_dilated(
      y, w, window_strides=(down, down), padding=padding, lhs_dilation=(up, up),
      dimension_numbers=_DIMS)
  return jnp.transpose(y.reshape(batch, channels, y.shape[1], y.shape[2]), (0, 2, 3, 1))


def upsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2,
                gain: float = 1.0) -> jax.Array:
  """(B, H, W, C) -> (B, H * factor, W * factor, C), FIR-filtered; constants scale by `gain`."""
  k = setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
  p = k.shape[0] - factor
  return upfirdn_2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2,
                  gain: float = 1.0) -> jax.Array:
  """(B, H, W, C) -> (B, H // factor, W // factor, C), FIR-filtered; constants scale by `gain`."""
  k = setup_kernel([1] * factor if k is None else k) * gain
  p = k.shape[0] - factor
  return upfirdn_2d(x, k, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x: jax.Array, w: jax.Array, k: Sequence[float] | None = None,
                     factor: int = 2, gain: float = 1.0) -> jax.Array:
  """Fused FIR upsampling and convolution with w: (kh, kw, C_in, C_out); -> (B, fH, fW, C_out).

  A stride-`factor` transposed convolution with w followed by the FIR filter, padded once.
  """
  k = setup_kernel([1] * factor if k is None else k) * (gain * factor**2)
  conv_size = w.shape[0]
  p = (k.shape[0] - factor) - (conv_size - 1)
  # The paper's transposed convolution (kernel flipped twice there) is a correlation of the
  # zero-inserted input with w itself, padded by (size - 1): side (H - 1) * factor + conv_size.
  y = jax.lax.conv_general_dilated(
      x, w, window_strides=(1, 1), padding=[(conv_size - 1, conv_size - 1)] * 2,
      lhs_dilation=(factor, factor), dimension_numbers=_DIMS)
  return upfirdn_2d(y, k, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x: jax.Array, w: jax.Array, k: Sequence[float] | None = None,
                       factor: int = 2, gain: float = 1.0) -> jax.Array:
  """Fused FIR filtering and stride-`factor` convolution with w; -> (B, H/f, W/f, C_out)."""
  k = setup_kernel([1] * factor if k is None else k) * gain
  p = (k.shape[0] - factor) + (w.shape[0] - 1)
  y = upfirdn_2d(x, k, pad0=(p + 1) // 2, pad1=p // 2)
  return jax.lax.conv_general_dilated(
      y, w, window_strides=(factor, factor), padding='VALID', dimension_numbers=_DIMS)


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling: every pixel repeated factor x factor times."""
  return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
  """Average pooling over factor x factor blocks."""
  B, H, W, C = x.shape
  return jnp.mean(x.reshape(B, H // factor, factor, W // factor, factor, C), axis=(2, 4))


class Conv2d(nn.Module):
  """Convolution with optional fused FIR up- or down-sampling (params `weight`, `bias`)."""
  fmaps: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_kernel: Sequence[int] = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: Callable[..., Any] | None = None

  @nn.compact
  def __call__(self, x):
    if self.up and self.down:
      raise ConfigError('Conv2d cannot both upsample and downsample.')
    w = self.param('weight', self.kernel_init, (self.kernel, self.kernel, x.shape[-1], self.fmaps))
    w = w.astype(x.dtype)   # compute in the input's dtype (bf16 mixed precision)
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=_DIMS)
    if self.use_bias:
      x = x + self.param('bias', nn.initializers.zeros, (self.fmaps,)).astype(x.dtype)
    return x
