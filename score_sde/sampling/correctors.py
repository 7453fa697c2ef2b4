"""Correctors of the paper's predictor–corrector samplers: score-based MCMC at a fixed t.

A corrector is a pure function ``corrector(rng, x, t, sde, score_fn, snr, n_steps) ->
(x, x_mean)`` with x (B, ...) and t (B,); it runs ``n_steps`` Langevin steps
x <- x + eps score + sqrt(2 eps) z, differing only in the step size eps:

* ``langevin`` (Alg. 4/5 of the paper): eps = 2 alpha (snr ||z|| / ||score||)^2, with the norms
  averaged over the batch; alpha = 1 - beta_i for VP and sub-VP (``sde.alphas``), 1 for VE.
* ``ald`` (SMLD's annealed Langevin dynamics): eps = 2 alpha (snr s(t))^2, s(t) the marginal std.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.sde_lib import batch_mul

Corrector = Callable[..., tuple[jax.Array, jax.Array]]


def langevin_alpha(sde, t: jax.Array) -> jax.Array:
  """alpha_i of the paper's step size: ``sde.alphas[i]`` where the SDE has a discrete chain of
  alphas (VP, sub-VP), else 1 (VE). Shape (B,)."""
  alphas = sde.chain_alphas
  if alphas is None:
    return jnp.ones_like(t)
  return alphas[sde.discrete_index(t)]


def _batch_norm(v: jax.Array) -> jax.Array:
  """Mean over the batch of the per-example Euclidean norm: (B, ...) -> ()."""
  return jnp.mean(jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1))


def _langevin_step_size(grad, noise, t, sde, snr):
  return 2.0 * langevin_alpha(sde, t) * (snr * _batch_norm(noise) / _batch_norm(grad))**2


def _ald_step_size(grad, noise, t, sde, snr):
  del grad, noise
  _, std = sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)
  return 2.0 * langevin_alpha(sde, t) * (snr * std)**2


def _langevin_chain(step_size_fn, rng, x, t, sde, score_fn, snr, n_steps):
  """n_steps of x <- x + eps score(x, t) + sqrt(2 eps) z, as one fori_loop."""
  def body(i, carry):
    x, _ = carry
    grad = score_fn(x, t)
    noise = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    eps = step_size_fn(grad, noise, t, sde, snr)
    x_mean = x + batch_mul(eps, grad)
    return x_mean + batch_mul(jnp.sqrt(2.0 * eps), noise), x_mean
  return jax.lax.fori_loop(0, n_steps, body, (x, x))


def langevin(rng, x, t, sde, score_fn, snr, n_steps):
  return _langevin_chain(_langevin_step_size, rng, x, t, sde, score_fn, snr, n_steps)


def ald(rng, x, t, sde, score_fn, snr, n_steps):
  return _langevin_chain(_ald_step_size, rng, x, t, sde, score_fn, snr, n_steps)


def none(rng, x, t, sde, score_fn, snr, n_steps):
  del rng, t, sde, score_fn, snr, n_steps
  return x, x


CORRECTORS = {'langevin': langevin, 'ald': ald, 'none': none}


def corrector_nfe(name: str, n_steps: int) -> int:
  """Score evaluations of one corrector call."""
  return 0 if name == 'none' else n_steps


def get_corrector(name: str) -> Corrector:
  if name not in CORRECTORS:
    raise ConfigError(f'Unknown corrector {name!r}; valid: {sorted(CORRECTORS)}.')
  return CORRECTORS[name]
