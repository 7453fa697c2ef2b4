"""unCLIP's decoder (Ramesh et al. 2022, DALL-E 2): a conditional UNet driven by an image
embedding e (a contrastive pair's, ``models/contrastive.py``) instead of a caption.

    e = context[:, 0]                                           (B, D)   the (B, 1, D) context
    tokens = reshape(W_tok e + b_tok, (B, k, D_ctx))            k extra context tokens
    temb  += W_t e + b_t                                        (B, 4 C_0) into the time embedding
    out    = UNet(x, t, tokens, class_emb=W_t e + b_t)          ``unet_condition``'s UNet

The null embedding e = 0 (classifier-free dropout, ``losses.drop_context``) leaves the biases
alone: the unconditional model. As in DALL-E 2 both routes carry e: the time embedding reaches
every ResNet block, the tokens every cross-attention.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from score_sde.errors import ConfigError
from score_sde.models import precond, unet_condition


class UnCLIPDecoder(nn.Module):
  """``(x (B, H, W, C), t (B,), context (B, 1, D)) -> (B, H, W, C)``. ``context_dim`` is D,
  the embedding's (``models.utils.context_shape``); the UNet cross-attends to ``num_tokens``
  tokens of its own ``cross_attention_dim``."""
  unet: unet_condition.UNet2DConditionModel
  context_dim: int
  num_tokens: int = 4
  context_length: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, t: jax.Array, context: jax.Array,
               train: bool = False) -> jax.Array:
    if context.shape[1:] != (1, self.context_dim):
      raise ConfigError(f'The unCLIP decoder reads (B, 1, {self.context_dim}) image '
                        f'embeddings, not {context.shape}.')
    e = context[:, 0]
    width = self.unet.cross_attention_dim
    tokens = nn.Dense(self.num_tokens * width, name='embedding_tokens')(e)
    added = nn.Dense(4 * self.unet.block_out_channels[0], name='embedding_time')(e)
    return self.unet(x, t, tokens.reshape(e.shape[0], self.num_tokens, width), train=train,
                     class_emb=added)


def decoder_from_config(config) -> nn.Module:
  """``model.name='unclip_decoder'``: ``unet_condition.build(config)`` (its cross-attention width
  ``model.context_dim``, the embedding's D) behind ``model.unclip_tokens`` tokens, wrapped as
  ``model.precond`` asks."""
  m = config.model
  if int(m.context_length) != 1 or m.context_dim is None:
    raise ConfigError('The unCLIP decoder reads one image embedding per example: set '
                      f'model.context_length=1 (now {m.context_length}) and model.context_dim to '
                      f'its dimension (now {m.context_dim}).')
  unet = unet_condition.build(config)
  return precond.wrap(config, UnCLIPDecoder(unet=unet, context_dim=int(m.context_dim),
                                            num_tokens=int(m.unclip_tokens)), 'positional')
