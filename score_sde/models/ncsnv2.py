"""NCSNv2 (Song & Ermon 2020): a dilated ResNet encoder and a RefineNet decoder.

x: (B, H, W, C), labels: (B,) integer noise-level indices -> (B, H, W, C). The network itself is
unconditional; with `scale_by_sigma` its output is divided by sigma_label (the NCSNv2 recipe).
Three depths, as in the paper's code: 'ncsnv2_64' (images < 96 px), 'ncsnv2_128' (96-128 px),
'ncsnv2_256' (128-256 px). Parameter names equal those of the paper's code.
`dtype`, `remat`: compute dtype and rematerialised residual / RefineNet blocks (models/compute.py).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_sde.models import compute, layers, normalization
from score_sde.models.layers import ncsn_conv3x3 as conv3x3
from score_sde.errors import ConfigError

# Per depth: the encoder stages as (channel multiplier, dilation), and the RefineNet widths from
# the coarsest stage to the finest. A stage after the first halves the resolution when its
# dilation is 1, and dilates instead otherwise.
ARCHITECTURES = {
    'ncsnv2_64': (((1, 1), (2, 1), (2, 2), (2, 4)), (2, 2, 2, 1)),
    'ncsnv2_128': (((1, 1), (2, 1), (2, 1), (4, 2), (4, 4)), (4, 2, 2, 1, 1)),
    'ncsnv2_256': (((1, 1), (2, 1), (2, 1), (2, 1), (4, 2), (4, 4)), (4, 2, 2, 2, 1, 1)),
}


def downsampling(stages) -> int:
  """The encoder's total downsampling factor: stages after the first with dilation 1 halve."""
  return 2**sum(1 for i, (_, d) in enumerate(stages) if i and d == 1)


class NCSNv2(nn.Module):
  """RefineNet score network; `stages` and `refine_mult` as in ARCHITECTURES."""
  stages: Sequence[tuple[int, int]] = ARCHITECTURES['ncsnv2_64'][0]
  refine_mult: Sequence[int] = ARCHITECTURES['ncsnv2_64'][1]
  nf: int = 128
  nonlinearity: str = 'elu'
  normalization: str = 'InstanceNorm++'
  interpolation: str = 'bilinear'
  scale_by_sigma: bool = True
  centered: bool = False
  num_channels: int = 3
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  num_scales: int = 232
  dtype: Any = jnp.float32        # compute dtype (parameters stay float32)
  remat: bool = False             # rematerialise the residual and RefineNet blocks

  def _encoder(self, h, act, norm):
    """The skip features of every stage, finest first."""
    block = functools.partial(compute.blocks(layers.ResidualBlock, self.remat), act=act,
                              normalization=norm)
    skips = []
    for i, (mult, dilation) in enumerate(self.stages):
      h = block(output_dim=mult * self.nf, resample='down' if i else None, dilation=dilation)(h)
      h = block(output_dim=mult * self.nf, resample=None, dilation=dilation)(h)
      skips.append(h)
    return skips

  def _decoder(self, skips, act):
    refine = functools.partial(compute.blocks(layers.RefineBlock, self.remat), act=act,
                               interpolation=self.interpolation)
    coarse = skips[-1]
    h = refine(output_shape=coarse.shape[1:3], features=self.refine_mult[0] * self.nf,
               start=True)([coarse])
    finer = skips[-2::-1]
    for j, (skip, mult) in enumerate(zip(finer, self.refine_mult[1:])):
      h = refine(output_shape=skip.shape[1:3], features=mult * self.nf,
                 end=j == len(finer) - 1)([skip, h])
    return h

  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    layers.check_image_input(x, self.num_channels, downsampling(self.stages), 'NCSNv2')
    act = layers.get_act(self.nonlinearity)
    norm = normalization.get_normalization(self.normalization)
    h = x if self.centered else 2 * x - 1.0
    h = conv3x3(h.astype(self.dtype), self.nf)   # every layer computes in its input's dtype
    h = self._decoder(self._encoder(h, act, norm), act)
    h = conv3x3(act(norm(dtype=h.dtype)(h)), x.shape[-1]).astype(jnp.float32)
    if self.scale_by_sigma:
      table = jnp.asarray(layers.sigma_table(self.sigma_min, self.sigma_max, self.num_scales))
      h = h / table[labels.astype(jnp.int32)].reshape((-1, 1, 1, 1))
    return h


def from_config(config) -> NCSNv2:
  """The NCSNv2 of depth config.model.name with the fields of config.model and config.data."""
  m, d = config.model, config.data
  if m.name not in ARCHITECTURES:
    raise ConfigError(f'Unknown NCSNv2 depth {m.name!r}; valid: {sorted(ARCHITECTURES)}.')
  stages, refine_mult = ARCHITECTURES[m.name]
  layers.check_image_size(d.image_size, downsampling(stages), m.name)
  return NCSNv2(stages=stages, refine_mult=refine_mult, nf=m.nf, nonlinearity=m.nonlinearity,
                normalization=m.normalization, interpolation=m.interpolation,
                scale_by_sigma=m.scale_by_sigma, centered=d.centered,
                num_channels=d.num_channels, sigma_min=m.sigma_min, sigma_max=m.sigma_max,
                num_scales=m.num_scales, **compute.from_config(config))
