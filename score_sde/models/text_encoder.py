"""CLIP's text encoder (Radford et al. 2021) with the parameter layout of transformers'
``CLIPTextModel``, as used by Stable Diffusion 1.x (ViT-L/14's text tower).

    h_0 = E_tok[ids] + E_pos[0..L-1]                               (B, L, D)
    h_l = h' + MLP(LN_2(h')),  h' = h_{l-1} + Attn_causal(LN_1(h_{l-1}))
    last_hidden_state = LN_final(h_n)                              (B, L, D)
    pooled = last_hidden_state[b, eos position of ids[b]]          (B, D)

Position i attends to positions <= i (causal mask), so padding after the end token does not change
the states before it. Parameter names mirror transformers' (``text_model/encoder/layers_3/
self_attn/q_proj/kernel`` <-> ``text_model.encoder.layers.3.self_attn.q_proj.weight``), which is
what ``torch_weights`` maps. ``tokenizer.py`` turns prompts into ``ids``; ``convert_clip.py``
reads the published ``model.safetensors``.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError

# The end token before transformers PR #24773 was configured as 2; such configs pool at the
# largest id (the end token is the largest id CLIP's vocabulary has), as transformers still does.
LEGACY_EOS_TOKEN_ID = 2


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    'quick_gelu': quick_gelu,
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
}


def pool_at_eos(hidden: jax.Array, ids: jax.Array, eos_token_id: int) -> jax.Array:
  """(B, L, D) states, (B, L) ids -> (B, D): the state at the first ``eos_token_id``, or at the
  largest id when ``eos_token_id`` is the legacy 2 (transformers' two rules)."""
  if eos_token_id == LEGACY_EOS_TOKEN_ID:
    position = jnp.argmax(ids, axis=-1)
  else:
    position = jnp.argmax(ids == eos_token_id, axis=-1)
  return jnp.take_along_axis(hidden, position[:, None, None], axis=1)[:, 0]


class CLIPAttention(nn.Module):
  """Multi-head self-attention over (B, L, D) with an additive (B or 1, 1, L, L) mask."""
  hidden_size: int
  num_heads: int

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    b, length, _ = h.shape
    head_dim = self.hidden_size // self.num_heads
    split = lambda name: nn.Dense(self.hidden_size, name=name)(h).reshape(
        b, length, self.num_heads, head_dim)
    q, k, v = split('q_proj'), split('k_proj'), split('v_proj')
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * head_dim ** -0.5 + mask
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, v).reshape(b, length, self.hidden_size)
    return nn.Dense(self.hidden_size, name='out_proj')(out)


class CLIPMLP(nn.Module):
  hidden_size: int
  intermediate_size: int
  hidden_act: str

  @nn.compact
  def __call__(self, h: jax.Array) -> jax.Array:
    h = ACTIVATIONS[self.hidden_act](nn.Dense(self.intermediate_size, name='fc1')(h))
    return nn.Dense(self.hidden_size, name='fc2')(h)


class CLIPEncoderLayer(nn.Module):
  """Pre-LN transformer layer: h + Attn(LN_1 h), then + MLP(LN_2 .)."""
  hidden_size: int
  intermediate_size: int
  num_heads: int
  hidden_act: str
  layer_norm_eps: float

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, name=name)
    h = h + CLIPAttention(self.hidden_size, self.num_heads, name='self_attn')(
        norm('layer_norm1')(h), mask)
    return h + CLIPMLP(self.hidden_size, self.intermediate_size, self.hidden_act, name='mlp')(
        norm('layer_norm2')(h))


class CLIPEncoder(nn.Module):
  num_layers: int
  layer: Mapping[str, Any]  # CLIPEncoderLayer's fields

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    for i in range(self.num_layers):
      h = CLIPEncoderLayer(**self.layer, name=f'layers_{i}')(h, mask)
    return h


class CLIPTextEmbeddings(nn.Module):
  vocab_size: int
  hidden_size: int
  max_position_embeddings: int

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    tokens = nn.Embed(self.vocab_size, self.hidden_size, name='token_embedding')(ids)
    positions = nn.Embed(self.max_position_embeddings, self.hidden_size,
                         name='position_embedding')(jnp.arange(ids.shape[-1]))
    return tokens + positions


class CLIPTextTransformer(nn.Module):
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  max_position_embeddings: int
  hidden_act: str
  layer_norm_eps: float
  eos_token_id: int

  @nn.compact
  def __call__(self, ids: jax.Array, attention_mask: jax.Array | None = None):
    length = ids.shape[-1]
    h = CLIPTextEmbeddings(self.vocab_size, self.hidden_size, self.max_position_embeddings,
                           name='embeddings')(ids)
    allowed = jnp.tril(jnp.ones((length, length), bool))[None, None]
    if attention_mask is not None:  # (B, L), 1 for tokens, 0 for padding keys
      allowed = allowed & attention_mask.astype(bool)[:, None, None, :]
    mask = jnp.where(allowed, 0.0, jnp.finfo(h.dtype).min)
    layer = dict(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                 num_heads=self.num_heads, hidden_act=self.hidden_act,
                 layer_norm_eps=self.layer_norm_eps)
    h = CLIPEncoder(self.num_layers, layer, name='encoder')(h, mask)
    h = nn.LayerNorm(epsilon=self.layer_norm_eps, name='final_layer_norm')(h)
    return h, pool_at_eos(h, ids, self.eos_token_id)


class CLIPTextModel(nn.Module):
  """transformers' ``CLIPTextModel``: ``(ids (B, L) int, attention_mask (B, L) or None) ->
  (last_hidden_state (B, L, D), pooled (B, D))``. L <= ``max_position_embeddings``.

  Stable Diffusion 1.x cross-attends to ``last_hidden_state`` of 77 ids (prompt padded with the
  end token); ``pooled`` is what CLIP projects into its joint space.
  """
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_layers: int = 12
  num_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = 'quick_gelu'
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407

  @nn.compact
  def __call__(self, ids: jax.Array, attention_mask: jax.Array | None = None):
    if ids.shape[-1] > self.max_position_embeddings:
      raise ConfigError(f'{ids.shape[-1]} tokens exceed the text encoder\'s context of '
                        f'{self.max_position_embeddings}; tokenize with truncation.')
    fields = {k: getattr(self, k) for k in FIELDS}
    return CLIPTextTransformer(**fields, name='text_model')(ids, attention_mask)


FIELDS = ('vocab_size', 'hidden_size', 'intermediate_size', 'num_layers', 'num_heads',
          'max_position_embeddings', 'hidden_act', 'layer_norm_eps', 'eos_token_id')

# transformers' CLIPTextConfig key -> our field (the same where not listed).
_HF_NAMES = {'num_hidden_layers': 'num_layers', 'num_attention_heads': 'num_heads'}

PRESETS = {
    # Stable Diffusion 1.x: openai/clip-vit-large-patch14's text tower (its config has eos 2).
    'sd1': dict(hidden_size=768, intermediate_size=3072, num_layers=12, num_heads=12,
                eos_token_id=LEGACY_EOS_TOKEN_ID),
    'tiny': dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_layers=2,
                 num_heads=4, max_position_embeddings=77),
}


def from_hf_config(config: Mapping[str, Any]) -> CLIPTextModel:
  """transformers' ``config.json`` of a ``CLIPTextModel`` (or a ``CLIPModel``'s
  ``text_config``) -> our module; keys we do not model (dropout, projection size) are ignored."""
  config = dict(config.get('text_config') or config)
  fields = {_HF_NAMES.get(k, k): v for k, v in config.items()}
  fields = {k: v for k, v in fields.items() if k in FIELDS}
  if fields.get('hidden_act', 'quick_gelu') not in ACTIVATIONS:
    raise ConfigError(f'hidden_act {fields["hidden_act"]!r} is not one of {sorted(ACTIVATIONS)}.')
  return CLIPTextModel(**fields)


def from_preset(name: str, **overrides) -> CLIPTextModel:
  if name not in PRESETS:
    raise ConfigError(f'Unknown text encoder preset {name!r}; valid: {sorted(PRESETS)}.')
  return CLIPTextModel(**{**PRESETS[name], **overrides})


def param_shapes(model: CLIPTextModel) -> Any:
  """The params tree of ``model`` as ShapeDtypeStructs (nothing is computed)."""
  ids = jnp.zeros((1, model.max_position_embeddings), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), ids))['params']
