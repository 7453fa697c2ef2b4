"""The DDPM U-Net (Ho et al. 2020), x: (B, H, W, C), labels: (B,) -> (B, H, W, C).

Labels are the integer DDPM timestep (discrete) or 999 t (continuous VP); they enter through a
sinusoidal embedding and a 2-layer MLP. Parameter names equal those of the paper's code.
`dtype`, `remat`: compute dtype and rematerialised blocks (models/compute.py).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_sde.models import compute, embeddings, layers, normalization, precond
from score_sde.models.layers import ddpm_conv3x3 as conv3x3, default_init


class DDPM(nn.Module):
  """DDPM: ResNet blocks with GroupNorm, attention at `attn_resolutions`, skip connections."""
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  scale_by_sigma: bool = False
  nonlinearity: str = 'swish'
  normalization: str = 'GroupNorm'
  centered: bool = False
  num_channels: int = 3
  # Only for scale_by_sigma (SMLD training): sigma = table[label].
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  num_scales: int = 1000
  num_classes: int | None = None  # class-conditional: a class embedding added to temb
  dtype: Any = jnp.float32        # compute dtype (parameters stay float32)
  remat: bool = False             # rematerialise the residual and attention blocks

  def _embed(self, labels, act, class_labels=None):
    if not self.conditional:
      return None
    temb = embeddings.get_timestep_embedding(labels, self.nf)
    temb = nn.Dense(self.nf * 4, kernel_init=default_init())(temb)
    temb = nn.Dense(self.nf * 4, kernel_init=default_init())(act(temb))
    if self.num_classes:
      temb = temb + embeddings.class_embedding(class_labels, self.num_classes, self.nf * 4)
    return temb

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None):
    layers.check_image_input(x, self.num_channels, 2**(len(self.ch_mult) - 1), 'DDPM')
    act = layers.get_act(self.nonlinearity)
    normalize = normalization.get_normalization(self.normalization)
    resblock = functools.partial(
        compute.blocks(layers.ResnetBlockDDPM, self.remat, static_argnums=(3,)), act=act,
        normalize=normalize, dropout=self.dropout)
    attn = functools.partial(compute.blocks(layers.AttnBlock, self.remat), normalize=normalize)
    num_resolutions = len(self.ch_mult)
    temb = self._embed(labels, act, class_labels)
    temb = None if temb is None else temb.astype(self.dtype)
    h = x if self.centered else 2 * x - 1.0
    h = h.astype(self.dtype)   # every layer computes in its input's dtype

    hs = [conv3x3(h, self.nf)]
    for i_level in range(num_resolutions):
      for _ in range(self.num_res_blocks):
        h = resblock(out_ch=self.nf * self.ch_mult[i_level])(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn()(h)
        hs.append(h)
      if i_level != num_resolutions - 1:
        hs.append(layers.Downsample(with_conv=self.resamp_with_conv)(hs[-1]))

    h = resblock()(hs[-1], temb, train)
    h = attn()(h)
    h = resblock()(h, temb, train)

    for i_level in reversed(range(num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = resblock(out_ch=self.nf * self.ch_mult[i_level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attn()(h)
      if i_level != 0:
        h = layers.Upsample(with_conv=self.resamp_with_conv)(h)

    h = conv3x3(act(normalize(dtype=h.dtype)(h)), x.shape[-1], init_scale=0.0)
    h = h.astype(jnp.float32)
    if self.scale_by_sigma:
      # Only SMLD's loss wants the output divided by sigma; DDPM's scales it in the loss.
      table = jnp.asarray(layers.sigma_table(self.sigma_min, self.sigma_max, self.num_scales))
      h = h / table[labels.astype(jnp.int32)].reshape((-1, 1, 1, 1))
    return h


def from_config(config) -> nn.Module:
  """DDPM with the fields of config.model and config.data (EDM-wrapped if asked)."""
  m, d = config.model, config.data
  layers.check_image_size(d.image_size, 2**(len(m.ch_mult) - 1), 'DDPM')
  return precond.wrap(config, DDPM(
      nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
      attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
      resamp_with_conv=m.resamp_with_conv, conditional=m.conditional,
      scale_by_sigma=m.scale_by_sigma, nonlinearity=m.nonlinearity,
      normalization=m.normalization, centered=d.centered, num_channels=d.num_channels,
      sigma_min=m.sigma_min, sigma_max=m.sigma_max, num_scales=m.num_scales,
      num_classes=d.num_classes if m.class_conditional else None,
      **compute.from_config(config)), embedding_type='positional')
