"""Predictors of the paper's predictor–corrector samplers: one reverse-time step each.

A predictor is a pure function ``predictor(rng, x, t, sde, score_fn) -> (x, x_mean)`` with x of
shape (B, ...) and t of shape (B,) (Euler–Maruyama and reverse diffusion also take
``probability_flow``: step the probability-flow ODE instead, whose "diffusion" is 0); ``x_mean`` is the step without its noise (what noise removal
returns after the last step). The time grid is the paper's: N points from T down to eps with
dt = -T / N, where N = ``sde.N`` (the PC sampler sets ``sde.N`` to its number of steps).
``predictor_nfe`` says how many score evaluations one step costs.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.sde_lib import batch_mul

Predictor = Callable[..., tuple[jax.Array, jax.Array]]


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


def ancestral_sampling(rng, x, t, sde, score_fn):
  """Ancestral sampling of the discrete chain of ``sde`` (VP: DDPM, VE: SMLD):
  ``sde.ancestral_step``."""
  return sde.ancestral_step(rng, x, t, score_fn)


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


def predictor_nfe(name: str) -> int:
  """Score evaluations of one step: one for every predictor but 'none'."""
  return 0 if name == 'none' else 1


_WITH_PROBABILITY_FLOW = ('euler_maruyama', 'reverse_diffusion')


def get_predictor(name: str, sde, probability_flow: bool = False) -> Predictor:
  """The predictor ``name`` as ``predictor(rng, x, t, sde, score_fn)``; raises ValueError for
  unknown names, one ``sde`` lacks, or ``probability_flow`` where the predictor has none."""
  if name not in PREDICTORS:
    raise ConfigError(f'Unknown predictor {name!r}; valid: {sorted(PREDICTORS)}.')
  if probability_flow and name not in _WITH_PROBABILITY_FLOW:
    raise ConfigError(f'probability_flow=True is available for predictors '
                      f'{list(_WITH_PROBABILITY_FLOW)} only, not {name!r}.')
  if name == 'ancestral_sampling':   # an SDE without a discrete chain raises its error now
    jax.eval_shape(lambda: sde.ancestral_step(jax.random.PRNGKey(0), jnp.zeros((1, 1)),
                                              jnp.ones((1,)), lambda x, t: x))
  if probability_flow:
    return functools.partial(PREDICTORS[name], probability_flow=True)
  return PREDICTORS[name]
