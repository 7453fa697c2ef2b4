"""DiT, the diffusion transformer (Peebles & Xie 2023), x: (B, H, W, C), labels: (B,) -> x's shape.

  tokens  = patchify(x) + pos           p x p patches -> (B, T, D), T = H W / p^2, through a
                                        p x p stride-p convolution; pos: fixed 2-D sin-cos
  c       = t_embedder(labels) [+ y_embedder(class_labels)]   (B, D)
  blocks  : adaLN-Zero, from c: shift, scale, gate for attention and for the MLP;
            x += gate_msa * attn(modulate(LN(x), shift_msa, scale_msa)), likewise the MLP
  output  = unpatchify(linear(modulate(LN(x), shift, scale)))  (B, H, W, C) [or 2 C]

With ``context_dim`` (not in DiT; PixArt-alpha's text conditioning, Chen et al. 2023) each block
also cross-attends to a context (B, L, context_dim) between the attention and the MLP:
x += CrossAttention(LN(x), context), its output projection zero-initialised, so the initial
network is the context-free one; None (the default) leaves DiT's parameters as they are.

modulate(h, shift, scale) = h (1 + scale) + shift. The adaLN projections and the final layer start
at zero, so each block starts as the identity and the network's output as 0 (adaLN-Zero).

``labels`` is the noise conditioning of ``models.utils`` (999 t for VP SDEs, DiT's own timestep
convention). With ``num_classes`` the label table has num_classes + 1 rows, the last the null
class of classifier-free guidance; the framework's losses drop labels to it
(``training.label_dropout``), so the network itself never does (DiT's ``class_dropout_prob`` is
that setting). ``learn_sigma`` doubles the output channels as in DiT (the second half is its
learned variance); the call returns the first C unless ``return_sigma``.

Parameter names follow facebookresearch/DiT's state dict with list indices joined by '_'
(``blocks.3.adaLN_modulation.1.weight`` -> ``blocks_3/adaLN_modulation_1/kernel``), so its released
checkpoints load through ``models.convert_dit``. The position embedding is computed from the input's
size, not stored: a model serves any H, W that the patch size divides.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError, DataError
from score_sde.models import compute, precond

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros


def modulate(h, shift, scale):
  """h (B, T, D) with a per-example shift and scale (B, D): h (1 + scale) + shift."""
  return h * (1 + scale[:, None, :]) + shift[:, None, :]


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
  """(M,) positions -> (M, dim): [sin(pos w_k), cos(pos w_k)], w_k = 10000^(-2k/dim)."""
  omega = 1.0 / 10000**(np.arange(dim // 2, dtype=np.float64) / (dim / 2))
  angles = positions.reshape(-1).astype(np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def pos_embed_2d(dim: int, height: int, width: int) -> np.ndarray:
  """The fixed (height width, dim) position embedding of an height x width token grid, row-major:
  the first dim/2 features encode the column, the last dim/2 the row (as in MAE and DiT)."""
  if dim % 4:
    raise ConfigError(f'DiT hidden_size must be divisible by 4 for the 2-D sin-cos position '
                      f'embedding, got {dim}.')
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)],
                        axis=1).astype(np.float32)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """(B,) timesteps -> (B, dim): [cos(t f_k), sin(t f_k)], f_k = max_period^(-k / (dim/2))."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-6, use_scale=False, use_bias=False, name=name)


class TimestepEmbedder(nn.Module):
  """(B,) -> (B, hidden_size): sinusoids, then Linear, SiLU, Linear (``mlp_0``, ``mlp_2``)."""
  hidden_size: int
  frequency_embedding_size: int = 256

  @nn.compact
  def __call__(self, t):
    init = nn.initializers.normal(0.02)
    h = timestep_embedding(t, self.frequency_embedding_size)
    h = nn.Dense(self.hidden_size, kernel_init=init, name='mlp_0')(h)
    return nn.Dense(self.hidden_size, kernel_init=init, name='mlp_2')(nn.silu(h))


class LabelEmbedder(nn.Module):
  """(B,) labels in [0, num_classes] -> (B, hidden_size); row num_classes is the null class."""
  num_classes: int
  hidden_size: int

  @nn.compact
  def __call__(self, class_labels):
    return nn.Embed(self.num_classes + 1, self.hidden_size, name='embedding_table',
                    embedding_init=nn.initializers.normal(0.02))(class_labels.astype(jnp.int32))


class PatchEmbed(nn.Module):
  """(B, H, W, C) -> (B, H/p, W/p, D): a p x p stride-p convolution, initialised like a dense
  layer on the flattened patch (xavier with fan-in p^2 C)."""
  patch_size: int
  hidden_size: int

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    init = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2),
                                            out_axis=-1)
    return nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding='VALID', kernel_init=init,
                   dtype=x.dtype, name='proj')(x)


class Attention(nn.Module):
  """Multi-head self-attention as in timm's ViT: one ``qkv`` projection, softmax(q k^T /
  sqrt(d_head)) v, then ``proj``. (B, T, D) -> (B, T, D)."""
  num_heads: int

  @nn.compact
  def __call__(self, x):
    b, t, d = x.shape
    qkv = nn.Dense(3 * d, kernel_init=xavier, dtype=x.dtype, name='qkv')(x)
    q, k, v = jnp.moveaxis(qkv.reshape(b, t, 3, self.num_heads, d // self.num_heads), 2, 0)
    logits = jnp.einsum('bqhc,bkhc->bhqk', q, k) / math.sqrt(d // self.num_heads)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    h = jnp.einsum('bhqk,bkhc->bqhc', weights, v).reshape(b, t, d)
    return nn.Dense(d, kernel_init=xavier, dtype=x.dtype, name='proj')(h)


class CrossAttention(nn.Module):
  """Multi-head cross-attention (PixArt-alpha's names): queries ``q_linear`` from x (B, T, D),
  keys and values ``kv_linear`` from the context (B, L, D_ctx), softmax over the L tokens, then
  ``proj`` (zero-initialised). (B, T, D) -> (B, T, D)."""
  num_heads: int

  @nn.compact
  def __call__(self, x, context):
    b, t, d = x.shape
    c = d // self.num_heads
    q = nn.Dense(d, kernel_init=xavier, dtype=x.dtype, name='q_linear')(x)
    kv = nn.Dense(2 * d, kernel_init=xavier, dtype=x.dtype, name='kv_linear')(
        context.astype(x.dtype))
    k, v = jnp.moveaxis(kv.reshape(b, -1, 2, self.num_heads, c), 2, 0)
    logits = jnp.einsum('bqhc,bkhc->bhqk', q.reshape(b, t, self.num_heads, c), k) / math.sqrt(c)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    h = jnp.einsum('bhqk,bkhc->bqhc', weights, v).reshape(b, t, d)
    return nn.Dense(d, kernel_init=zeros, dtype=x.dtype, name='proj')(h)


class Mlp(nn.Module):
  """fc1, GELU (tanh approximation), fc2."""
  hidden_features: int

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(self.hidden_features, kernel_init=xavier, dtype=x.dtype, name='fc1')(x)
    h = nn.gelu(h, approximate=True)
    return nn.Dense(x.shape[-1], kernel_init=xavier, dtype=x.dtype, name='fc2')(h)


class DiTBlock(nn.Module):
  """A transformer block with adaLN-Zero conditioning on c (B, D). (B, T, D) -> (B, T, D)."""
  num_heads: int
  mlp_ratio: float = 4.0

  @nn.compact
  def __call__(self, x, c, context=None):
    """``context`` (B, L, D_ctx) or None (no cross-attention layer)."""
    d = x.shape[-1]
    mod = nn.Dense(6 * d, kernel_init=zeros, dtype=x.dtype,
                   name='adaLN_modulation_1')(nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=-1)
    h = modulate(layer_norm('norm1')(x), shift_msa, scale_msa)
    x = x + gate_msa[:, None, :] * Attention(self.num_heads, name='attn')(h)
    if context is not None:
      x = x + CrossAttention(self.num_heads, name='cross_attn')(layer_norm('norm_cross')(x),
                                                                context)
    h = modulate(layer_norm('norm2')(x), shift_mlp, scale_mlp)
    return x + gate_mlp[:, None, :] * Mlp(int(d * self.mlp_ratio), name='mlp')(h)


class FinalLayer(nn.Module):
  """LN, adaLN shift and scale from c, linear to p^2 out_channels per token (all zero-initialised)."""
  patch_size: int
  out_channels: int

  @nn.compact
  def __call__(self, x, c):
    mod = nn.Dense(2 * x.shape[-1], kernel_init=zeros, dtype=x.dtype,
                   name='adaLN_modulation_1')(nn.silu(c))
    shift, scale = jnp.split(mod, 2, axis=-1)
    h = modulate(layer_norm('norm_final')(x), shift, scale)
    return nn.Dense(self.patch_size**2 * self.out_channels, kernel_init=zeros, dtype=x.dtype,
                    name='linear')(h)


def unpatchify(tokens, height: int, width: int, p: int) -> jax.Array:
  """(B, (H/p)(W/p), p p C) -> (B, H, W, C), patches in row-major order."""
  b, _, features = tokens.shape
  h, w, c = height // p, width // p, features // (p * p)
  x = tokens.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, c)


class DiT(nn.Module):
  """The diffusion transformer; sizes of the paper's variants in ``VARIANTS``."""
  patch_size: int = 2
  in_channels: int = 4
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_classes: int | None = 1000  # class-conditional (with the null class num_classes), or None
  learn_sigma: bool = True
  centered: bool = True           # False: inputs in [0, 1] are mapped to [-1, 1] first
  dtype: Any = jnp.float32        # compute dtype (parameters stay float32)
  remat: bool = False             # rematerialise each block in the backward pass
  context_dim: int | None = None  # D of a context each block cross-attends to (None: none)
  context_length: int = 1         # L of the contexts it is given (no parameter depends on it)

  def check_input(self, x):
    p = self.patch_size
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise DataError(f'DiT was built for inputs (B, H, W, {self.in_channels}); got shape '
                      f'{tuple(x.shape)}.')
    if x.shape[1] % p or x.shape[2] % p:
      raise DataError(f'DiT patch size {p} does not divide the input size '
                      f'{x.shape[1]}x{x.shape[2]}; use a patch size that divides it.')

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None,
               return_sigma: bool = False, context=None):
    del train  # DiT has no dropout; label dropout is the loss's (training.label_dropout)
    self.check_input(x)
    _, height, width, _ = x.shape
    p, d = self.patch_size, self.hidden_size
    c = TimestepEmbedder(d, name='t_embedder')(labels)
    if self.num_classes:
      if class_labels is None:
        raise ConfigError('A class-conditional DiT needs class_labels (num_classes: no label).')
      c = c + LabelEmbedder(self.num_classes, d, name='y_embedder')(class_labels)
    h = x if self.centered else 2 * x - 1.0
    patches = PatchEmbed(p, d, name='x_embedder')(h.astype(self.dtype))
    tokens = patches.reshape(patches.shape[0], -1, d)
    tokens = tokens + jnp.asarray(pos_embed_2d(d, height // p, width // p), self.dtype)
    c = c.astype(self.dtype)
    if self.context_dim:
      context = (jnp.zeros((x.shape[0], self.context_length, self.context_dim))
                 if context is None else context).astype(self.dtype)
    else:
      context = None
    block = nn.remat(DiTBlock) if self.remat else DiTBlock
    for i in range(self.depth):
      tokens = block(self.num_heads, self.mlp_ratio, name=f'blocks_{i}')(tokens, c, context)
    out_channels = self.in_channels * (2 if self.learn_sigma else 1)
    tokens = FinalLayer(p, out_channels, name='final_layer')(tokens, c)
    out = unpatchify(tokens, height, width, p).astype(jnp.float32)
    return out if return_sigma else out[..., :self.in_channels]


# The paper's sizes (Table 1): depth, hidden size, heads; any patch size p.
SIZES = {'S': (12, 384, 6), 'B': (12, 768, 12), 'L': (24, 1024, 16), 'XL': (28, 1152, 16)}
VARIANTS = {f'DiT-{size}/{p}': functools.partial(DiT, depth=depth, hidden_size=width,
                                                  num_heads=heads, patch_size=p)
            for size, (depth, width, heads) in SIZES.items() for p in (2, 4, 8)}


def fields_from_config(m) -> dict:
  """The size fields of ``config.model``: ``variant`` (a ``VARIANTS`` name, e.g. 'DiT-B/2') or,
  with ``variant`` None, ``depth``, ``hidden_size``, ``num_heads``, ``patch_size``."""
  variant = m.get('variant', None)
  if variant is not None:
    if variant not in VARIANTS:
      raise ConfigError(f'Unknown model.variant {variant!r}; valid: {list(VARIANTS)}.')
    return dict(VARIANTS[variant].keywords)
  return dict(depth=m.depth, hidden_size=m.hidden_size, num_heads=m.num_heads,
              patch_size=m.patch_size)


def check_input_size(size: int | None, patch_size: int) -> None:
  """ConfigError unless the patch size divides the (image or latent) size ``size``."""
  if size is not None and size % patch_size:
    raise ConfigError(f'DiT patch size {patch_size} does not divide the input size {size}; use a '
                      f'patch size that divides it (model.patch_size or model.variant).')


def from_config(config) -> nn.Module:
  """DiT with the fields of ``config.model`` for ``config.data``'s images (for latent diffusion,
  ``models.get_model`` passes the latent view), EDM-wrapped if asked."""
  m, d = config.model, config.data
  if d.image_size is None:
    raise ConfigError('DiT is an image (or latent) model; data.dataset is 2-D data.')
  fields = fields_from_config(m)
  check_input_size(d.image_size, fields['patch_size'])
  if fields['hidden_size'] % fields['num_heads']:
    raise ConfigError(f'DiT hidden_size {fields["hidden_size"]} is not divisible by num_heads '
                      f'{fields["num_heads"]}.')
  return precond.wrap(config, DiT(
      in_channels=d.num_channels, mlp_ratio=m.get('mlp_ratio', 4.0),
      learn_sigma=m.get('learn_sigma', False),
      num_classes=d.num_classes if m.get('class_conditional', False) else None,
      centered=d.centered,
      context_dim=None if m.get('context_dim') is None else int(m.context_dim),
      context_length=int(m.get('context_length', 1)), **fields, **compute.from_config(config)),
      embedding_type='positional')
