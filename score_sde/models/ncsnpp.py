"""NCSN++ and DDPM++ (Song et al. 2021, App. H): one U-Net, configured by typed fields.

x: (B, H, W, C), labels: (B,) -> (B, H, W, C). Labels are the noise conditioning of
`models.utils`: sigma(t) with Fourier embeddings (the network sees log sigma), 999 t or an integer
index with positional embeddings.

The architecture, in the paper's terms:
  - `resblock_type`: 'ddpm' (DDPM's block; separate Up/Downsample layers) or 'biggan' (blocks that
    resample themselves), both with `skip_rescale` (residual sums / sqrt 2) and `init_scale`.
  - `fir`: FIR (1, 3, 3, 1) anti-aliased resampling instead of nearest / average pooling.
  - `progressive_input`: an input pyramid, downsampled alongside the encoder and merged in
    ('input_skip': Combine; 'residual': a learned downsampling added to h).
  - `progressive`: an output pyramid ('output_skip': per-resolution RGB heads, upsampled and
    summed; 'residual': a learned upsampling added to h).
  - `scale_by_sigma`: divide the output by sigma (VE: the network predicts the score
    -z / sigma with a target of unit scale).
  - `dtype`, `remat`: compute dtype and rematerialised blocks (models/compute.py).
  - `context_dim` (not in the paper): a context (B, context_length, context_dim) (e.g. a
    caption's words or a text encoder's states) that a `layerspp.CrossAttnBlockpp` after every
    attention block cross-attends to, with `context_heads` heads. None (the default): no such
    block, and the parameters are exactly the paper's.

Parameter names and shapes equal those of the paper's code for the same config.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.models import compute, embeddings, layers, layerspp, precond
from score_sde.models.layers import ddpm_conv3x3 as conv3x3, default_init, group_norm

RESBLOCK_TYPES = ('ddpm', 'biggan')
PROGRESSIVE_TYPES = ('none', 'output_skip', 'residual')
PROGRESSIVE_INPUT_TYPES = ('none', 'input_skip', 'residual')
EMBEDDING_TYPES = ('fourier', 'positional')


def _check_choice(value: str, valid: Sequence[str], what: str) -> str:
  if value.lower() not in valid:
    raise ConfigError(f'Unknown {what} {value!r}; valid: {list(valid)}.')
  return value.lower()


class NCSNpp(nn.Module):
  """NCSN++ / DDPM++ score network. See the module docstring for the options."""
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  fir: bool = True
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True
  resblock_type: str = 'biggan'
  progressive: str = 'none'
  progressive_input: str = 'residual'
  progressive_combine: str = 'sum'
  embedding_type: str = 'fourier'
  fourier_scale: float = 16.0
  init_scale: float = 0.0
  scale_by_sigma: bool = False
  nonlinearity: str = 'swish'
  centered: bool = False          # input in [-1, 1]; else [0, 1] and mapped to [-1, 1]
  num_channels: int = 3
  # Only for positional embeddings with scale_by_sigma: sigma = table[int(label)].
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  num_scales: int = 1000
  num_classes: int | None = None  # class-conditional: a class embedding added to temb
  two_times: bool = False         # MeanFlow's u(x, r, t): an embedding of the span t - r added too
  dtype: Any = jnp.float32        # compute dtype (parameters stay float32)
  remat: bool = False             # rematerialise the residual and attention blocks
  context_dim: int | None = None  # D of the context cross-attended to after each attention block
  context_length: int = 1         # L of the contexts it is given (no parameter depends on it)
  context_heads: int = 1

  def _validate(self, x):
    _check_choice(self.resblock_type, RESBLOCK_TYPES, 'resblock_type')
    _check_choice(self.progressive, PROGRESSIVE_TYPES, 'progressive')
    _check_choice(self.progressive_input, PROGRESSIVE_INPUT_TYPES, 'progressive_input')
    _check_choice(self.embedding_type, EMBEDDING_TYPES, 'embedding_type')
    _check_choice(self.progressive_combine, layerspp.COMBINE_METHODS, 'progressive_combine')
    layers.check_image_input(x, self.num_channels, 2**(len(self.ch_mult) - 1), 'NCSNpp')

  def _embed(self, labels, act, class_labels=None, interval=None):
    """(B,) labels -> (B, 4 nf) time (+ class, + span) embedding (None if unconditional), (B,)
    sigmas."""
    if self.embedding_type.lower() == 'fourier':
      sigmas = labels
      temb = embeddings.GaussianFourierProjection(
          embedding_size=self.nf, scale=self.fourier_scale)(jnp.log(labels))
    else:
      table = layers.sigma_table(self.sigma_min, self.sigma_max, self.num_scales)
      sigmas = jnp.asarray(table)[labels.astype(jnp.int32)] if self.scale_by_sigma else None
      temb = embeddings.get_timestep_embedding(labels, self.nf)
    if not self.conditional:
      return None, sigmas
    temb = nn.Dense(self.nf * 4, kernel_init=default_init())(temb)
    temb = nn.Dense(self.nf * 4, kernel_init=default_init())(act(temb))
    if self.num_classes:
      temb = temb + embeddings.class_embedding(class_labels, self.num_classes, self.nf * 4)
    if self.two_times:
      temb = temb + embeddings.span_embedding(interval, labels, self.nf * 4, act)
    return temb, sigmas

  def _blocks(self, act):
    """Partials of (ResnetBlock, AttnBlock) for this configuration."""
    common = dict(act=act, dropout=self.dropout, init_scale=self.init_scale,
                  skip_rescale=self.skip_rescale)
    if self.resblock_type.lower() == 'ddpm':
      resblock = functools.partial(
          compute.blocks(layerspp.ResnetBlockDDPMpp, self.remat, static_argnums=(3,)), **common)
    else:
      resblock = functools.partial(
          compute.blocks(layerspp.ResnetBlockBigGANpp, self.remat, static_argnums=(3,)),
          fir=self.fir, fir_kernel=tuple(self.fir_kernel), **common)
    attn = functools.partial(compute.blocks(layerspp.AttnBlockpp, self.remat),
                             init_scale=self.init_scale, skip_rescale=self.skip_rescale)
    return resblock, attn

  def _attention(self, self_attn, batch: int, context):
    """``attn(h)``: a new self-attention block on h, then, with ``context_dim``, a new
    cross-attention block to the context."""
    if not self.context_dim:
      return lambda h: self_attn()(h)
    if context is None:
      context = jnp.zeros((batch, self.context_length, self.context_dim))
    context = context.astype(self.dtype)
    cross = functools.partial(compute.blocks(layerspp.CrossAttnBlockpp, self.remat),
                              num_heads=self.context_heads)
    return lambda h: cross()(self_attn()(h), context)

  def _downsample(self, h, temb, train, resblock):
    if self.resblock_type.lower() == 'ddpm':
      return layerspp.Downsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                 fir_kernel=tuple(self.fir_kernel))(h)
    return resblock(down=True)(h, temb, train)

  def _upsample(self, h, temb, train, resblock):
    if self.resblock_type.lower() == 'ddpm':
      return layerspp.Upsample(with_conv=self.resamp_with_conv, fir=self.fir,
                               fir_kernel=tuple(self.fir_kernel))(h)
    return resblock(up=True)(h, temb, train)

  def _merge_input_pyramid(self, input_pyramid, h):
    """Downsample the input pyramid to h's resolution and merge it in: (new h, new pyramid)."""
    mode = self.progressive_input.lower()
    if mode == 'none':
      return h, input_pyramid
    pyramid_down = functools.partial(layerspp.Downsample, fir=self.fir,
                                     fir_kernel=tuple(self.fir_kernel))
    if mode == 'input_skip':
      input_pyramid = pyramid_down(with_conv=False)(input_pyramid)
      return layerspp.Combine(method=self.progressive_combine.lower())(input_pyramid, h), \
          input_pyramid
    input_pyramid = pyramid_down(with_conv=True, out_ch=h.shape[-1])(input_pyramid)
    input_pyramid = layerspp.residual_sum(input_pyramid, h, self.skip_rescale)
    return input_pyramid, input_pyramid

  def _output_pyramid(self, pyramid, h, act, out_channels, top: bool):
    """Update the output pyramid at h's resolution: (new h, new pyramid)."""
    mode = self.progressive.lower()
    if mode == 'none':
      return h, pyramid
    pyramid_up = functools.partial(layerspp.Upsample, fir=self.fir,
                                   fir_kernel=tuple(self.fir_kernel))
    if mode == 'output_skip':
      if not top:
        pyramid = pyramid_up(with_conv=False)(pyramid)
      head = conv3x3(act(group_norm(h)), out_channels, init_scale=self.init_scale)
      return h, head if top else pyramid + head
    if top:
      return h, conv3x3(act(group_norm(h)), h.shape[-1])
    pyramid = pyramid_up(with_conv=True, out_ch=h.shape[-1])(pyramid)
    pyramid = layerspp.residual_sum(pyramid, h, self.skip_rescale)
    return pyramid, pyramid

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None, interval=None,
               context=None):
    """``context`` (B, L, context_dim): read only with ``context_dim`` (None there: zeros, the
    null context)."""
    self._validate(x)
    act = layers.get_act(self.nonlinearity)
    resblock, self_attn = self._blocks(act)
    attn = self._attention(self_attn, x.shape[0], context)
    num_resolutions = len(self.ch_mult)
    temb, sigmas = self._embed(labels, act, class_labels, interval)
    if not self.centered:
      x = 2 * x - 1.0
    x = x.astype(self.dtype)   # every layer computes in its input's dtype
    temb = None if temb is None else temb.astype(self.dtype)

    # Encoder: hs keeps every skip connection, the input pyramid runs alongside.
    input_pyramid = x
    hs = [conv3x3(x, self.nf)]
    for i_level in range(num_resolutions):
      for _ in range(self.num_res_blocks):
        h = resblock(out_ch=self.nf * self.ch_mult[i_level])(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = attn(h)
        hs.append(h)
      if i_level != num_resolutions - 1:
        h = self._downsample(hs[-1], temb, train, resblock)
        h, input_pyramid = self._merge_input_pyramid(input_pyramid, h)
        hs.append(h)

    h = resblock()(hs[-1], temb, train)
    h = attn(h)
    h = resblock()(h, temb, train)

    # Decoder: consumes the skips in reverse; the output pyramid runs alongside.
    pyramid = None
    for i_level in reversed(range(num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = resblock(out_ch=self.nf * self.ch_mult[i_level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = attn(h)
      h, pyramid = self._output_pyramid(pyramid, h, act, x.shape[-1],
                                        top=i_level == num_resolutions - 1)
      if i_level != 0:
        h = self._upsample(h, temb, train, resblock)

    if self.progressive.lower() == 'output_skip':
      h = pyramid
    else:
      h = conv3x3(act(group_norm(h)), x.shape[-1], init_scale=self.init_scale)
    h = h.astype(jnp.float32)
    if self.scale_by_sigma:
      h = h / sigmas.reshape((-1, 1, 1, 1))
    return h


def from_config(config) -> nn.Module:
  """NCSN++ / DDPM++ with the fields of config.model and config.data (EDM-wrapped if asked)."""
  m, d = config.model, config.data
  layers.check_image_size(d.image_size, 2**(len(m.ch_mult) - 1), 'NCSN++ / DDPM++')
  return precond.wrap(config, NCSNpp(
      nf=m.nf, ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
      attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
      resamp_with_conv=m.resamp_with_conv, conditional=m.conditional, fir=m.fir,
      fir_kernel=tuple(m.fir_kernel), skip_rescale=m.skip_rescale,
      resblock_type=m.resblock_type, progressive=m.progressive,
      progressive_input=m.progressive_input, progressive_combine=m.progressive_combine,
      embedding_type=m.embedding_type, fourier_scale=m.fourier_scale, init_scale=m.init_scale,
      scale_by_sigma=m.scale_by_sigma, nonlinearity=m.nonlinearity, centered=d.centered,
      num_channels=d.num_channels, sigma_min=m.sigma_min, sigma_max=m.sigma_max,
      num_scales=m.num_scales,
      num_classes=d.num_classes if m.class_conditional else None,
      two_times=precond.two_times(config),
      context_dim=None if m.get('context_dim') is None else int(m.context_dim),
      context_length=int(m.get('context_length', 1)),
      context_heads=int(m.get('context_heads', 1)), **compute.from_config(config)))
