"""EDM preconditioning (Karras et al. 2022) for any of our SDEs: `config.model.precond = 'edm'`.

The network F is wrapped into a denoiser of x~ = x0 + sigma n:

    D(x~; sigma) = c_skip x~ + c_out F(c_in x~; c_noise)
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = ln(sigma) / 4,      sd = sigma_data.

An SDE with marginal x(t) = m x0 + s z is the same as x~ = x / m with sigma = s / m, so for every
SDE here  score(x, t) = (m D(x / m; s / m) - x) / s^2.

Training draws ln sigma ~ N(P_mean, P_std^2) and weights ||D - x0||^2 by
lambda = (sigma^2 + sd^2) / (sigma sd)^2. With D - x0 = sigma s (score + z / s) this is the paper's
continuous loss ||s score + z||^2 times (sigma^2 + sd^2) / sd^2, so the DSM loss only needs the
times (`sample_times`) and that factor (`loss_weight`).
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde import parameterization, sde_lib
from score_sde.errors import ConfigError

# What the network's labels are, so that its embedding sees c_noise = ln(sigma) / 4: Fourier
# embeddings take the log of their labels themselves, positional ones take labels as they are.
C_NOISE_LABELS = {
    'fourier': lambda sigma: sigma**0.25,
    'positional': lambda sigma: jnp.log(sigma) / 4,
}


def edm_coefficients(sigma: jax.Array, sigma_data: float):
  """(c_skip, c_out, c_in) for (B,) noise levels, each (B,)."""
  total = sigma**2 + sigma_data**2
  return sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1.0 / jnp.sqrt(total)


class EDMPrecond(nn.Module):
  """The denoiser D(x; sigma) of the wrapped network; x: (B, H, W, C), sigma: (B,)."""
  net: nn.Module
  sigma_data: float = 0.5
  embedding_type: str = 'fourier'
  P_mean: float = -1.2
  P_std: float = 1.2

  def __call__(self, x, sigma, train: bool = False, **class_kwargs):
    return x + self.residual(x, sigma, train=train, **class_kwargs)

  def residual(self, x, sigma, train: bool = False, **class_kwargs):
    """D(x; sigma) - x = (c_skip - 1) x + c_out F, with c_skip - 1 = -sigma^2 / (sigma^2 + sd^2)
    written out: at small sigma, D - x is far smaller than x and would be lost to round-off."""
    if self.embedding_type not in C_NOISE_LABELS:
      raise ConfigError(f'Unknown embedding_type {self.embedding_type!r} for EDM; '
                        f'valid: {sorted(C_NOISE_LABELS)}.')
    _, c_out, c_in = edm_coefficients(sigma, self.sigma_data)
    labels = C_NOISE_LABELS[self.embedding_type](sigma)
    out = self.net(sde_lib.batch_mul(c_in, x), labels, train=train, **class_kwargs)
    skip = -sigma**2 / (sigma**2 + self.sigma_data**2)
    return sde_lib.batch_mul(skip, x) + sde_lib.batch_mul(c_out, out)


def _scale_and_std(sde, t):
  """(m(t), s(t)), each (B,): x(t) = m x0 + s z."""
  mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
  return mean[:, 0], std


def get_score_fn(sde, model: EDMPrecond, params, train: bool = False, rng=None,
                 class_kwargs=lambda batch: {}) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """score_fn(x, t) = (m D(x / m; s / m) - x) / s^2 for an EDMPrecond model.

  ``class_kwargs(batch)``: extra keyword arguments of a class-conditional network."""
  rngs = {'dropout': rng} if (train and rng is not None) else None

  def score_fn(x, t):
    m, s = _scale_and_std(sde, t)
    # m D - x = m (D(x~) - x~) with x~ = x / m.
    residual = model.apply({'params': params}, sde_lib.batch_mul(1.0 / m, x), s / m,
                           train=train, rngs=rngs, method=EDMPrecond.residual,
                           **class_kwargs(x.shape[0]))
    return sde_lib.batch_mul(m / s**2, residual)
  return score_fn


def sample_times(sde, u: jax.Array, eps: float, P_mean: float = -1.2, P_std: float = 1.2,
                 iters: int = 40) -> jax.Array:
  """Times t in [eps, T] with ln sigma(t) ~ N(P_mean, P_std^2) (clipped to the SDE's range).

  u: (B,) uniforms, mapped through the normal inverse CDF; sigma(t) is increasing, so t is
  found by bisection (any SDE, no closed-form inverse needed).
  """
  log_sigma = P_mean + P_std * jax.scipy.special.ndtri(jnp.clip(u, 1e-6, 1 - 1e-6))
  lo, hi = jnp.full_like(u, eps), jnp.full_like(u, sde.T)

  def bisect(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    above = jnp.log(sde.sigma_of_t(mid)) > log_sigma
    return jnp.where(above, lo, mid), jnp.where(above, mid, hi)
  lo, hi = jax.lax.fori_loop(0, iters, bisect, (lo, hi))
  return (lo + hi) / 2


def loss_weight(sde, t: jax.Array, sigma_data: float) -> jax.Array:
  """EDM's lambda relative to the paper's ||s score + z||^2: (sigma^2 + sd^2) / sd^2, (B,)."""
  sigma = sde.sigma_of_t(t)
  return (sigma**2 + sigma_data**2) / sigma_data**2


class Parameterized(nn.Module):
  """A network whose output is the quantity ``parameterization`` names ('score' | 'eps' | 'x0' |
  'velocity', see ``score_sde.parameterization``) instead of the SDE's default (models/utils).
  It shares the network's scope: the parameter tree is the bare network's."""
  net: nn.Module
  parameterization: str

  def setup(self):
    nn.share_scope(self, self.net)

  def __call__(self, x, labels, train: bool = False, **class_kwargs):
    return self.net(x, labels, train=train, **class_kwargs)


PRECONDS = ('paper', 'edm')


def two_times(config) -> bool:
  """``config.model.two_times`` (MeanFlow's u(x, r, t)), checked: it needs the bare network."""
  m = config.model
  on = bool(m.get('two_times', False))
  if on and (m.get('parameterization') is not None or m.get('precond', 'paper') != 'paper'):
    raise ConfigError("model.two_times=True (MeanFlow's average velocity u(x, r, t)) needs the "
                      "bare network: model.parameterization=None and model.precond='paper'.")
  return on


def wrap(config, net: nn.Module, embedding_type: str | None = None) -> nn.Module:
  """The network as `config.model.precond` asks: unchanged ('paper') or EDM-preconditioned;
  with `config.model.parameterization` set, a 'paper' network is read as that quantity.

  `embedding_type` is the network's (default: config.model.embedding_type).
  """
  precond = config.model.get('precond', 'paper')
  if precond not in PRECONDS:
    raise ConfigError(f'Unknown model.precond {precond!r}; valid: {list(PRECONDS)}.')
  output = config.model.get('parameterization', None)
  if output is not None:
    parameterization.check(output)
    if precond == 'edm':
      raise ConfigError(f"model.parameterization={output!r} needs model.precond='paper': the EDM "
                        'preconditioned network predicts x0 through its own c_skip / c_out.')
    return Parameterized(net=net, parameterization=output)
  if precond == 'paper':
    return net
  return EDMPrecond(net=net, sigma_data=config.model.sigma_data,
                    P_mean=config.model.P_mean, P_std=config.model.P_std,
                    embedding_type=embedding_type or config.model.embedding_type)
