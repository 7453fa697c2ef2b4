"""A time-conditioned MLP score network for low-dimensional data, x: (B, D) -> (B, D)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from score_sde.models import embeddings


class MLP(nn.Module):
  """h = x; for each layer: h = act(Dense(h) + Dense(temb)); out = Dense_D(h).

  ``labels`` are the noise conditioning of ``models.utils`` (999 t for VP, sigma(t) for VE).
  Fourier embeddings see log(labels); positional ones see the labels themselves.
  With ``scale_by_sigma`` (VE) the output is divided by sigma, as NCSN++ does.
  """
  nf: int = 128
  num_layers: int = 3
  embedding_type: str = 'fourier'
  fourier_scale: float = 16.0
  scale_by_sigma: bool = False

  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    if self.embedding_type == 'fourier':
      temb = embeddings.GaussianFourierProjection(self.nf // 2, self.fourier_scale)(jnp.log(labels))
    elif self.embedding_type == 'positional':
      temb = embeddings.get_timestep_embedding(labels, self.nf)
    else:
      raise ValueError(f"Unknown embedding_type {self.embedding_type!r}; valid: 'fourier', 'positional'.")
    temb = nn.Dense(self.nf)(nn.silu(nn.Dense(self.nf)(temb)))
    h = x
    for _ in range(self.num_layers):
      h = nn.silu(nn.Dense(self.nf)(h) + nn.Dense(self.nf)(temb))
    out = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)
    if self.scale_by_sigma:
      out = out / labels[:, None]
    return out


def from_config(config) -> MLP:
  m = config.model
  return MLP(nf=m.nf, num_layers=m.num_layers, embedding_type=m.embedding_type,
             fourier_scale=m.fourier_scale, scale_by_sigma=m.scale_by_sigma)
