"""Predictors of the paper's predictor–corrector samplers: one reverse-time step each.

A predictor is a pure function ``predictor(rng, x, t, sde, score_fn) -> (x, x_mean)`` with x of
shape (B, ...) and t of shape (B,) (Euler–Maruyama and reverse diffusion also take
``probability_flow``: step the probability-flow ODE instead, whose "diffusion" is 0); ``x_mean`` is the step without its noise (what noise removal
returns after the last step). The time grid is the paper's: N points from T down to eps with
dt = -T / N, where N = ``sde.N`` (the PC sampler sets ``sde.N`` to its number of steps).
``PREDICTOR_NFE`` says how many score evaluations one step costs.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from score_sde import sde_lib
from score_sde.errors import ConfigError
from score_sde.sde_lib import batch_mul

Predictor = Callable[..., tuple[jax.Array, jax.Array]]


def discrete_index(sde, t: jax.Array) -> jax.Array:
  """Index i of t in the N-level discrete chain, i = floor(t (N - 1) / T) (the paper's rounding)."""
  return (t * (sde.N - 1) / sde.T).astype(jnp.int32)


def euler_maruyama(rng, x, t, sde, score_fn, probability_flow=False):
  """x <- x + [f - g^2 score] dt + g sqrt(-dt) z,  dt = -T/N (probability flow: g^2/2, no noise)."""
  dt = -sde.T / sde.N
  drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
  x_mean = x + drift * dt
  z = jax.random.normal(rng, x.shape, x.dtype)
  return x_mean + batch_mul(diffusion * jnp.sqrt(-dt), z), x_mean


def reverse_diffusion(rng, x, t, sde, score_fn, probability_flow=False):
  """The forward chain x_i = x_{i-1} + f_i + G_i z run backwards: x <- x - f + G^2 score + G z
  (probability flow: x <- x - f + G^2 score / 2)."""
  f, g = sde.reverse(score_fn, probability_flow).discretize(x, t)
  x_mean = x - f
  z = jax.random.normal(rng, x.shape, x.dtype)
  return x_mean + batch_mul(g, z), x_mean


def _vp_ancestral(rng, x, t, sde, score_fn):
  """DDPM's ancestral step: x <- (x + beta_i score) / sqrt(1 - beta_i) + sqrt(beta_i) z."""
  beta = sde.discrete_betas[discrete_index(sde, t)]
  x_mean = batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score_fn(x, t)))
  z = jax.random.normal(rng, x.shape, x.dtype)
  return x_mean + batch_mul(jnp.sqrt(beta), z), x_mean


def _ve_ancestral(rng, x, t, sde, score_fn):
  """SMLD's ancestral step between noise levels sigma_i > sigma_{i-1} (sigma_{-1} = 0):

  x <- x + (sigma_i^2 - sigma_{i-1}^2) score + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z.
  """
  i = discrete_index(sde, t)
  sigma = sde.discrete_sigmas[i]
  adjacent = jnp.where(i == 0, 0.0, sde.discrete_sigmas[jnp.maximum(i - 1, 0)])
  x_mean = x + batch_mul(sigma**2 - adjacent**2, score_fn(x, t))
  std = jnp.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
  z = jax.random.normal(rng, x.shape, x.dtype)
  return x_mean + batch_mul(std, z), x_mean


# The paper derives ancestral sampling for the DDPM (VP) and SMLD (VE) chains only.
_ANCESTRAL = {sde_lib.VPSDE: _vp_ancestral, sde_lib.VESDE: _ve_ancestral}


def ancestral_sampling(rng, x, t, sde, score_fn):
  """Ancestral sampling of the discrete chain of ``sde`` (VP: DDPM, VE: SMLD)."""
  return ancestral_step_for(sde)(rng, x, t, sde, score_fn)


def ancestral_step_for(sde) -> Predictor:
  if type(sde) not in _ANCESTRAL:
    raise ConfigError(
        f"Predictor 'ancestral_sampling' exists for {sorted(c.__name__ for c in _ANCESTRAL)} only, "
        f'not {type(sde).__name__}; use one of: euler_maruyama, reverse_diffusion, none.')
  return _ANCESTRAL[type(sde)]


def none(rng, x, t, sde, score_fn):
  """No predictor (corrector-only sampling, e.g. SMLD's annealed Langevin dynamics)."""
  del rng, t, sde, score_fn
  return x, x


PREDICTORS = {
    'euler_maruyama': euler_maruyama,
    'reverse_diffusion': reverse_diffusion,
    'ancestral_sampling': ancestral_sampling,
    'none': none,
}
PREDICTOR_NFE = {'euler_maruyama': 1, 'reverse_diffusion': 1, 'ancestral_sampling': 1, 'none': 0}


_WITH_PROBABILITY_FLOW = ('euler_maruyama', 'reverse_diffusion')


def get_predictor(name: str, sde, probability_flow: bool = False) -> Predictor:
  """The predictor ``name`` as ``predictor(rng, x, t, sde, score_fn)``; raises ValueError for
  unknown names, one ``sde`` lacks, or ``probability_flow`` where the predictor has none."""
  if name not in PREDICTORS:
    raise ConfigError(f'Unknown predictor {name!r}; valid: {sorted(PREDICTORS)}.')
  if probability_flow and name not in _WITH_PROBABILITY_FLOW:
    raise ConfigError(f'probability_flow=True is available for predictors '
                      f'{list(_WITH_PROBABILITY_FLOW)} only, not {name!r}.')
  if name == 'ancestral_sampling':
    return ancestral_step_for(sde)
  if probability_flow:
    return functools.partial(PREDICTORS[name], probability_flow=True)
  return PREDICTORS[name]
