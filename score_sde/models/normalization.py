"""Per-image normalisations of (B, H, W, C) feature maps used by NCSNv2 (parameter names as in the
paper's code). Each computes in float32 and returns `dtype` (None: the input's), as flax's norms."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from score_sde.errors import ConfigError

_EPS = 1e-5


def _one_plus_normal(key, shape, dtype=jnp.float32):
  """1 + N(0, 0.02^2): scales start near identity."""
  return 1.0 + nn.initializers.normal(0.02)(key, shape, dtype)


def _float32(x):
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _instance_standardize(x):
  """(x - mean_HW) / std_HW per image and channel; also returns the (B, C) means."""
  means = jnp.mean(x, axis=(1, 2))
  h = (x - means[:, None, None, :]) / jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + _EPS)
  return h, means


class InstanceNorm2d(nn.Module):
  """Instance normalisation with per-channel scale (and bias)."""
  bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    shape = (1, 1, 1, x.shape[-1])
    h = _instance_standardize(_float32(x))[0] * self.param('scale', nn.initializers.ones, shape)
    h = h + self.param('bias', nn.initializers.zeros, shape) if self.bias else h
    return h.astype(self.dtype or x.dtype)


class VarianceNorm2d(nn.Module):
  """x / std_HW with a per-channel scale (the mean is kept)."""
  bias: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    shape = (1, 1, 1, x.shape[-1])
    x32 = _float32(x)
    h = x32 / jnp.sqrt(jnp.var(x32, axis=(1, 2), keepdims=True) + _EPS)
    h = h * self.param('scale', _one_plus_normal, shape)
    h = h + self.param('bias', nn.initializers.zeros, shape) if self.bias else h
    return h.astype(self.dtype or x.dtype)


class InstanceNorm2dPlus(nn.Module):
  """InstanceNorm++ (NCSN): instance norm that re-injects the standardised channel means.

  h = gamma * (IN(x) + alpha * (mu_c - mean_c(mu)) / std_c(mu)) + beta.
  """
  bias: bool = True
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    shape = (1, 1, 1, x.shape[-1])
    h, means = _instance_standardize(_float32(x))
    m = jnp.mean(means, axis=-1, keepdims=True)
    v = jnp.var(means, axis=-1, keepdims=True)
    means_plus = (means - m) / jnp.sqrt(v + _EPS)
    h = h + means_plus[:, None, None, :] * self.param('alpha', _one_plus_normal, shape)
    h = h * self.param('gamma', _one_plus_normal, shape)
    h = h + self.param('beta', nn.initializers.zeros, shape) if self.bias else h
    return h.astype(self.dtype or x.dtype)


NORMALIZATIONS = {
    'InstanceNorm': InstanceNorm2d,
    'InstanceNorm++': InstanceNorm2dPlus,
    'VarianceNorm': VarianceNorm2d,
    'GroupNorm': nn.GroupNorm,
}


def get_normalization(name: str):
  """The normalisation module class called `name`."""
  if name not in NORMALIZATIONS:
    raise ConfigError(f'Unknown normalization {name!r}; valid: {sorted(NORMALIZATIONS)}.')
  return NORMALIZATIONS[name]
