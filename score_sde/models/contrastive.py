"""A CLIP-style contrastive pair trained here (Radford et al. 2021): a small text encoder over
word contexts and a small image encoder, both ending in unit vectors of one space R^D.

    text:  (B, L, V) one-hot words (``datasets/captions.py``; zero rows: padding)
           h = W_tok w_i + p_i  ->  pre-LN transformer layers (padding masked out)
           ->  masked mean over words  ->  LayerNorm  ->  Dense_D  ->  u / ||u||      (B, D)
    image: (B, H, W, C) in the model's range
           [conv 3x3 -> SiLU -> 2x2 average pool] per width  ->  Dense -> SiLU -> Dense_D
           ->  v / ||v||                                                              (B, D)

Trained with the symmetric InfoNCE loss with a learnt temperature (``clip_loss``): the logits
are s v_i . u_j with s = exp(log_scale) (CLIP's init s = 1 / 0.07, capped at 100). Zero-shot
classification scores an image against the embeddings of one prompt per class
(``evaluation/zero_shot.py``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde.errors import DataError

MAX_LOGIT_SCALE = 100.0


def normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / ||x|| over the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def clip_loss(image_embeddings: jax.Array, text_embeddings: jax.Array,
              logit_scale: jax.Array) -> jax.Array:
  """Symmetric InfoNCE of B matched pairs (row i of each is pair i), (B, D) unit vectors:

      logits = s V U^T                                                        (B, B)
      loss   = (CE(logits, diag) + CE(logits^T, diag)) / 2

  CE averages -log softmax of the true pair over the row: images classify their caption among
  the batch's captions, captions their image. At s = 0 the loss is log B; for orthonormal
  matched pairs it is log(1 + (B - 1) e^-s)."""
  logits = logit_scale * image_embeddings @ text_embeddings.T
  labels = jnp.arange(logits.shape[0])
  per_image = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  per_text = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
  return (jnp.mean(per_image) + jnp.mean(per_text)) / 2


class _Layer(nn.Module):
  """Pre-LN transformer layer on (B, L, W) with a key mask (B, L): h += SelfAttn(LN h);
  h += MLP(LN h)."""
  width: int
  num_heads: int

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    attend = mask[:, None, None, :]   # (B, heads, queries, keys): padding is never attended to
    h = h + nn.MultiHeadDotProductAttention(self.num_heads, name='attn')(
        nn.LayerNorm(name='ln_1')(h), mask=attend)
    mlp = nn.Dense(self.width, name='fc_2')(nn.gelu(nn.Dense(4 * self.width, name='fc_1')(
        nn.LayerNorm(name='ln_2')(h))))
    return h + mlp


class TextEncoder(nn.Module):
  """``words (B, L, V)`` one-hot word sequences -> ``(B, embed_dim)`` unit vectors."""
  embed_dim: int = 32
  width: int = 64
  num_layers: int = 1
  num_heads: int = 4

  @nn.compact
  def __call__(self, words: jax.Array) -> jax.Array:
    mask = jnp.sum(words, axis=-1) > 0                                        # (B, L)
    # The one-hot rows pick token embeddings; a padding row picks none (only the position).
    h = nn.Dense(self.width, use_bias=False, name='token_embedding')(words)
    h = h + self.param('position_embedding', nn.initializers.normal(0.02),
                       (words.shape[1], self.width))
    for i in range(self.num_layers):
      h = _Layer(self.width, self.num_heads, name=f'layers_{i}')(h, mask)
    weights = mask.astype(h.dtype)[..., None]
    pooled = jnp.sum(h * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
    return normalize(nn.Dense(self.embed_dim, name='projection')(
        nn.LayerNorm(name='final_layer_norm')(pooled)))


class ImageEncoder(nn.Module):
  """``images (B, H, W, C)`` -> ``(B, embed_dim)`` unit vectors (H, W divisible by
  2^len(channels))."""
  embed_dim: int = 32
  channels: Sequence[int] = (16, 32)
  hidden: int = 64

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    h = images
    for i, c in enumerate(self.channels):
      h = nn.silu(nn.Conv(c, (3, 3), name=f'conv_{i}')(h))
      h = nn.avg_pool(h, (2, 2), strides=(2, 2))
    h = nn.silu(nn.Dense(self.hidden, name='fc')(h.reshape(h.shape[0], -1)))
    return normalize(nn.Dense(self.embed_dim, name='projection')(h))


class ContrastivePair(nn.Module):
  """The two encoders and the learnt temperature. ``__call__(images, words) -> (image
  embeddings (B, D), text embeddings (B, D), logit scale ())``; ``encode_image`` /
  ``encode_text`` (as ``method=``) embed one side."""
  text: TextEncoder
  image: ImageEncoder

  def setup(self):
    self.log_scale = self.param('log_scale', nn.initializers.constant(math.log(1 / 0.07)), ())

  def logit_scale(self) -> jax.Array:
    return jnp.minimum(jnp.exp(self.log_scale), MAX_LOGIT_SCALE)

  def encode_image(self, images: jax.Array) -> jax.Array:
    return self.image(images)

  def encode_text(self, words: jax.Array) -> jax.Array:
    return self.text(words)

  def __call__(self, images: jax.Array, words: jax.Array):
    return self.encode_image(images), self.encode_text(words), self.logit_scale()


FIELDS = ('embed_dim', 'text_width', 'text_layers', 'text_heads', 'image_channels',
          'image_hidden')


def from_fields(embed_dim: int, text_width: int, text_layers: int, text_heads: int,
                image_channels: Sequence[int], image_hidden: int) -> ContrastivePair:
  """The pair of ``config.contrastive``'s ``FIELDS``."""
  return ContrastivePair(
      text=TextEncoder(embed_dim=embed_dim, width=text_width, num_layers=text_layers,
                       num_heads=text_heads),
      image=ImageEncoder(embed_dim=embed_dim, channels=tuple(image_channels),
                         hidden=image_hidden))


def from_config(config) -> ContrastivePair:
  """``config.contrastive``'s pair (typed fields only)."""
  return from_fields(**{k: config.contrastive[k] for k in FIELDS})


def init_params(rng, pair: ContrastivePair, image_shape: Sequence[int], context_length: int,
                vocabulary_size: int):
  """Initial parameters for (H, W, C) images and (L, V) word contexts."""
  images = jnp.zeros((1,) + tuple(image_shape))
  words = jnp.zeros((1, context_length, vocabulary_size))
  return pair.init(rng, images, words)['params']


def optimizer(lr: float = 1e-3) -> optax.GradientTransformation:
  """The pair's: global-norm clipping at 1, then Adam at ``lr`` (the state's structure does not
  depend on ``lr``: a checkpoint restores into any)."""
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))


def embed(apply: Callable, params, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
  """``apply(params, x)`` (a jitted encoder) over (N, ...) inputs in batches of ``batch`` (the
  last one zero-padded: one shape, one compilation) -> (N, D)."""
  inputs = np.asarray(inputs, np.float32)
  padded = np.concatenate([inputs, np.zeros((-len(inputs) % batch,) + inputs.shape[1:],
                                            inputs.dtype)])
  return np.concatenate([np.asarray(apply(params, padded[i:i + batch]))
                         for i in range(0, len(padded), batch)])[:len(inputs)]


@dataclasses.dataclass(frozen=True)
class TrainedPair:
  """A trained pair with what it reads: ``vocabulary`` (V words), ``context_length`` (L words
  per caption) and ``image_shape`` (H, W, C) in the data's model range."""
  pair: ContrastivePair
  params: Any
  vocabulary: tuple[str, ...]
  context_length: int
  image_shape: tuple[int, int, int]

  @property
  def embed_dim(self) -> int:
    return self.pair.text.embed_dim

  @functools.cached_property
  def _encoders(self) -> dict[str, Callable]:
    """One jitted function per side, compiled once per input shape and reused."""
    return {m: jax.jit(functools.partial(self.pair.apply, method=m))
            for m in ('encode_image', 'encode_text')}

  def _apply(self, method: str) -> Callable:
    return lambda params, x: self._encoders[method]({'params': params}, x)

  def encode_text(self, texts: Sequence[str], what: str = 'Prompt') -> np.ndarray:
    """Captions or prompts -> (P, D) unit vectors; a word outside the vocabulary, or more than
    L words, is a one-line DataError."""
    from score_sde.datasets import captions
    words = captions.word_contexts(list(texts), self.vocabulary, self.context_length, what)
    return embed(self._apply('encode_text'), self.params, words)

  def encode_images(self, images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) images in the model's range -> (N, D) unit vectors."""
    if tuple(np.shape(images)[1:]) != self.image_shape:
      raise DataError(f'The image encoder reads {self.image_shape} images, not '
                      f'{tuple(np.shape(images)[1:])}.')
    return embed(self._apply('encode_image'), self.params, images)
