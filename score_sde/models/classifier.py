"""Noise-conditional classifiers p_t(y | x(t)) for classifier guidance (Song et al. 2021, App. I.1).

A classifier is called as ``apply({'params': p}, x, sigmas, train=...) -> logits (B, C)`` with
x(t) of the data's shape and sigmas = s(t), the std of the perturbation kernel
x(t) = m(t) x(0) + s(t) z (the paper's "ve_noise_scale"), embedded with Gaussian Fourier features
of log sigma. ``get_logit_fn`` turns one into ``logit_fn(x, t)`` for ``guidance``.

  'mlp'         residual MLP for low-dimensional data; input scaled by 1 / sqrt(1 + sigma^2).
  'wideresnet'  the paper's Wide-ResNet (Zagoruyko & Komodakis 2016; WRN-28-10 for CIFAR-10:
                4 blocks per group, width x10) with per-image standardisation, GroupNorm, and the
                noise embedding added inside every block.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError
from score_sde.models import embeddings


def _noise_embedding(sigmas, dim: int, scale: float):
  """(B,) sigmas -> (B, dim): Fourier features of log sigma and a 2-layer MLP."""
  temb = embeddings.GaussianFourierProjection(dim // 2, scale)(jnp.log(sigmas))
  return nn.Dense(dim)(nn.swish(nn.Dense(dim)(temb)))


class MLPClassifier(nn.Module):
  """h_{k+1} = h_k + Dense(silu(LayerNorm(h_k) + Dense(temb))); logits = Dense_C(silu(h_L))."""
  num_classes: int
  nf: int = 128
  num_layers: int = 3
  fourier_scale: float = 1.0

  @nn.compact
  def __call__(self, x, sigmas, train: bool = False):
    temb = _noise_embedding(sigmas, self.nf, self.fourier_scale)
    h = nn.Dense(self.nf)(x / jnp.sqrt(1.0 + sigmas[:, None]**2))
    for _ in range(self.num_layers):
      h = h + nn.Dense(self.nf)(nn.silu(nn.LayerNorm()(h) + nn.Dense(self.nf)(temb)))
    return nn.Dense(self.num_classes)(nn.silu(nn.LayerNorm()(h)))


def _norm_relu(x, relu: bool = True):
  x = nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5)(x)
  return nn.relu(x) if relu else x


_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class WideResNetBlock(nn.Module):
  """Pre-activation block; the noise embedding is added after the first convolution. The skip
  path is average-pooled and zero-padded to the block's width (no parameters)."""
  channels: int
  stride: int = 1
  activate_before_residual: bool = False

  @nn.compact
  def __call__(self, x, temb):
    if self.activate_before_residual:
      x = _norm_relu(x)
      h = x
    else:
      h = _norm_relu(x)
    h = nn.Conv(self.channels, (3, 3), (self.stride,) * 2, padding='SAME', use_bias=False,
                kernel_init=_conv_init)(h)
    h = h + nn.Dense(self.channels)(nn.swish(temb))[:, None, None, :]
    h = nn.Conv(self.channels, (3, 3), padding='SAME', use_bias=False,
                kernel_init=_conv_init)(_norm_relu(h))
    skip = x
    if skip.shape[-1] != self.channels or self.stride != 1:
      skip = nn.avg_pool(skip, (self.stride,) * 2, (self.stride,) * 2)
      skip = jnp.pad(skip, [(0, 0)] * 3 + [(0, self.channels - skip.shape[-1])])
    return h + skip


class WideResNet(nn.Module):
  """Noise-conditional Wide-ResNet, x: (B, H, W, C), sigmas: (B,) -> logits (B, num_classes)."""
  num_classes: int
  blocks_per_group: int = 4
  channel_multiplier: int = 10
  embedding_dim: int = 512
  fourier_scale: float = 16.0

  @nn.compact
  def __call__(self, x, sigmas, train: bool = False):
    d = np.prod(x.shape[1:])
    std = jnp.maximum(jnp.std(x, axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(d))
    x = (x - jnp.mean(x, axis=(1, 2, 3), keepdims=True)) / std
    temb = _noise_embedding(sigmas, self.embedding_dim, self.fourier_scale)
    h = nn.Conv(16, (3, 3), padding='SAME', use_bias=False, kernel_init=_conv_init)(x)
    for group, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
      for i in range(self.blocks_per_group):
        h = WideResNetBlock(width * self.channel_multiplier, stride if i == 0 else 1,
                            activate_before_residual=(group == 0 and i == 0))(h, temb)
    h = jnp.mean(_norm_relu(h), axis=(1, 2))
    return nn.Dense(self.num_classes)(h)


def _mlp(config, num_classes):
  c = config.classifier
  return MLPClassifier(num_classes=num_classes, nf=c.nf, num_layers=c.num_layers)


def _wideresnet(config, num_classes):
  c = config.classifier
  return WideResNet(num_classes=num_classes, blocks_per_group=c.blocks_per_group,
                    channel_multiplier=c.channel_multiplier)


CLASSIFIERS = {'mlp': _mlp, 'wideresnet': _wideresnet}


def get_classifier(config) -> nn.Module:
  """The classifier ``config.classifier.name`` for ``config.data.num_classes`` classes."""
  name = config.classifier.name
  if name not in CLASSIFIERS:
    raise ConfigError(f'Unknown classifier.name {name!r}; valid: {sorted(CLASSIFIERS)}.')
  num_classes = config.data.num_classes
  if num_classes is None or num_classes < 2:
    raise ConfigError(f'A classifier needs data.num_classes >= 2, got {num_classes}.')
  return CLASSIFIERS[name](config, num_classes)


def init_params(rng, classifier: nn.Module, input_shape):
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  return classifier.init(rng, x, jnp.ones((1,)), train=False)['params']


def noise_std(sde, t):
  """s(t), (B,): the classifier's noise conditioning."""
  return sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]


def get_logit_fn(sde, classifier: nn.Module, params) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """``logit_fn(x, t) -> (B, C)``: the classifier's logits for x(t) at times t (B,)."""
  def logit_fn(x, t):
    return classifier.apply({'params': params}, x, noise_std(sde, t), train=False)
  return logit_fn
