"""A time-conditioned residual MLP score network for low-dimensional data, x: (B, D) -> (B, D)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.models import compute, embeddings, precond

EMBEDDING_TYPES = ('fourier', 'positional')


class InputFourierFeatures(nn.Module):
  """[x, sin(2 pi x W), cos(2 pi x W)] with fixed W ~ N(0, scale^2), (B, D) -> (B, D + 2 F).

  Random features lift an MLP's bias towards smooth functions, so the sharp score of a
  thin structure at small t is learnt in a few thousand steps rather than tens of thousands.
  """
  num_features: int
  scale: float

  @nn.compact
  def __call__(self, x):
    W = self.param('W', nn.initializers.normal(self.scale), (x.shape[-1], self.num_features))
    proj = 2 * jnp.pi * x @ jax.lax.stop_gradient(W)
    return jnp.concatenate([x, jnp.sin(proj), jnp.cos(proj)], axis=-1)


class MLP(nn.Module):
  """h_0 = Dense(features(x)); h_{k+1} = h_k + Dense(silu(LayerNorm(h_k) + Dense(temb)));
  out = Dense_D(silu(LayerNorm(h_L))), zero-initialised so training starts from score 0.

  ``labels`` are the noise conditioning of ``models.utils`` (999 t for VP, sigma(t) for VE).
  Fourier time embeddings see log(labels); positional ones see the labels themselves.
  With ``scale_by_sigma`` (VE) the output is divided by sigma, as NCSN++ does.
  With ``num_classes``, a class embedding of ``class_labels`` (B,) is added to temb.
  With ``context_dim``, a context (B, context_length, context_dim) (e.g. unCLIP's prior: the
  text embedding, (B, 1, D)) enters as Dense(flatten(context)) added to temb; the zero context
  is the null condition of classifier-free guidance.
  With ``two_times`` (MeanFlow's u(x, r, t)), a positional embedding of ``interval`` (B,) (the
  span t - r as a label, ``models.utils.get_average_velocity_fn``; 0 when not given) is added
  to temb too.
  The layers after the embeddings compute in ``dtype`` (models/compute.py).
  """
  nf: int = 128
  num_layers: int = 3
  embedding_type: str = 'fourier'
  fourier_scale: float = 1.0
  input_fourier_scale: float | None = 1.0
  scale_by_sigma: bool = False
  num_classes: int | None = None
  two_times: bool = False
  context_dim: int | None = None
  context_length: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels, train: bool = False, class_labels=None, interval=None,
               context=None):
    if self.embedding_type == 'fourier':
      temb = embeddings.GaussianFourierProjection(self.nf // 2, self.fourier_scale)(jnp.log(labels))
    elif self.embedding_type == 'positional':
      temb = embeddings.get_timestep_embedding(labels, self.nf)
    else:
      raise ConfigError(f'Unknown embedding_type {self.embedding_type!r}; '
                        f'valid: {EMBEDDING_TYPES}.')
    temb = nn.Dense(self.nf)(nn.silu(nn.Dense(self.nf)(temb)))
    if self.num_classes:
      temb = temb + embeddings.class_embedding(class_labels, self.num_classes, self.nf)
    if self.context_dim:
      temb = temb + nn.Dense(self.nf, name='context_embedding')(
          context.reshape(context.shape[0], -1))
    if self.two_times:
      temb = temb + embeddings.span_embedding(interval, labels, self.nf)
    if self.input_fourier_scale:
      x_in = InputFourierFeatures(self.nf // 2, self.input_fourier_scale)(x)
    else:
      x_in = x
    dense = lambda n, **kw: nn.Dense(n, dtype=self.dtype, **kw)
    norm = lambda: nn.LayerNorm(dtype=self.dtype)
    temb = temb.astype(self.dtype)
    h = dense(self.nf)(x_in.astype(self.dtype))
    for _ in range(self.num_layers):
      h = h + dense(self.nf)(nn.silu(norm()(h) + dense(self.nf)(temb)))
    out = dense(x.shape[-1], kernel_init=nn.initializers.zeros)(nn.silu(norm()(h)))
    out = out.astype(jnp.float32)
    if self.scale_by_sigma:
      out = out / labels[:, None]
    return out


def from_config(config) -> MLP:
  m = config.model
  options = compute.from_config(config)
  if options.pop('remat'):
    raise ConfigError("model.remat = True has no blocks to rematerialise in model 'mlp' (small "
                      "activations); it is for the image networks 'ncsnpp', 'ddpm', 'ncsnv2_*'.")
  two_times = precond.two_times(config)
  return precond.wrap(config, MLP(
      nf=m.nf, two_times=two_times, num_layers=m.num_layers, embedding_type=m.embedding_type,
      fourier_scale=m.fourier_scale, input_fourier_scale=m.input_fourier_scale,
      scale_by_sigma=m.scale_by_sigma,
      num_classes=config.data.num_classes if m.class_conditional else None,
      context_dim=m.get('context_dim'), context_length=int(m.get('context_length', 1)),
      **options))
