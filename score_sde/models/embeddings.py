"""Noise-level embeddings shared by all score networks (parameter names as in the paper's code)."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int,
                           max_positions: int = 10000) -> jax.Array:
  """Transformer-style sinusoidal embedding of (B,) timesteps -> (B, embedding_dim) (DDPM)."""
  half_dim = embedding_dim // 2
  freqs = jnp.exp(-math.log(max_positions) / (half_dim - 1) * jnp.arange(half_dim))
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, [[0, 0], [0, 1]])
  return emb


class GaussianFourierProjection(nn.Module):
  """Random Fourier features [sin(2 pi W x), cos(2 pi W x)] with fixed W ~ N(0, scale^2).

  (B,) -> (B, 2 * embedding_size). W is stored as a parameter (so checkpoints carry it) but
  receives no gradient.
  """
  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    W = self.param('W', jax.nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
    W = jax.lax.stop_gradient(W)
    x_proj = x[:, None] * W[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


def class_embedding(class_labels, num_classes: int, dim: int) -> jax.Array:
  """(B,) int labels in [0, num_classes] -> (B, dim); label num_classes is the null class (no
  label), so one network gives both s(x, t, y) and s(x, t). Call inside a compact module."""
  if class_labels is None:
    raise ConfigError('A class-conditional network needs class_labels (num_classes: no label).')
  return nn.Embed(num_classes + 1, dim, name='class_embedding')(class_labels.astype(jnp.int32))


def span_embedding(interval, like, dim: int, act=nn.silu) -> jax.Array:
  """MeanFlow's second time: (B,) spans t - r as labels (``models.utils.get_average_velocity_fn``;
  None: zeros like ``like``) -> Dense(act(Dense(positional embedding))), (B, dim), added to a
  network's time embedding. Call inside a compact module."""
  interval = jnp.zeros_like(like) if interval is None else interval
  span = get_timestep_embedding(interval, dim)
  return nn.Dense(dim)(act(nn.Dense(dim)(span)))
