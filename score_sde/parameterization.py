"""What a network's output means, and the exact conversions between the four usual choices.

For a process with marginal x = m x0 + s eps (eps ~ N(0, I); m, s and their time derivatives
dm, ds at t), every quantity a diffusion or flow network predicts is linear in (x0, eps):

    name        q = a x0 + b eps             as E[q | x] it is
    'x0'        a = 1,    b = 0             the denoiser D(x, t) = E[x0 | x]
    'eps'       a = 0,    b = 1             the noise prediction
    'score'     a = 0,    b = -1 / s        grad_x log p_t(x) = -E[eps | x] / s   (Tweedie)
    'velocity'  a = dm,   b = ds            the probability-flow drift dx/dt = E[dm x0 + ds eps | x]

(the velocity identity: with f = dm / m and g^2 = d s^2/dt - 2 f s^2, the probability-flow
drift f x - g^2 score / 2 equals dm E[x0 | x] + ds E[eps | x]). Given x, a prediction q of one
kind fixes (x0, eps) by the 2 x 2 system

    [m  s] [x0 ]   [x]
    [a  b] [eps] = [q],      det = m b - s a,

whose solution is re-combined into any other kind: ``convert``. Conversions are exact inverses
of each other (one linear map and its inverse); they need det != 0, i.e. s > 0 for 'score' and
'eps', m > 0 for 'x0', and m ds - s dm != 0 for 'velocity' (true wherever s / m increases).
All arrays are (B, ...) with per-example (B,) coefficients.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.sde_lib import batch_mul

PARAMETERIZATIONS = ('score', 'eps', 'x0', 'velocity')


def check(name: str, what: str = 'model.parameterization') -> str:
  """``name`` if it is a known parameterization, else a ConfigError listing the valid ones."""
  if name not in PARAMETERIZATIONS:
    raise ConfigError(f'Unknown {what} {name!r}; valid: {list(PARAMETERIZATIONS)}.')
  return name


class Coefficients(NamedTuple):
  """m(t), s(t), dm/dt, ds/dt of x = m x0 + s eps, each (B,)."""
  m: jax.Array
  s: jax.Array
  dm: jax.Array
  ds: jax.Array


def coefficients(sde, t: jax.Array) -> Coefficients:
  """The process's coefficients at times t (B,), derivatives by forward-mode autodiff of
  ``sde.marginal_prob`` (exact for the closed forms of ``sde_lib``)."""
  def m_and_s(t):
    mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1), t.dtype), t)
    return mean[:, 0], std
  (m, s), (dm, ds) = jax.jvp(m_and_s, (t,), (jnp.ones_like(t),))
  return Coefficients(m, s, dm, ds)


def _basis(name: str, c: Coefficients):
  """(a, b) of q = a x0 + b eps for the quantity ``name``, each (B,) or a scalar."""
  return {
      'x0': (1.0, 0.0),
      'eps': (0.0, 1.0),
      'score': (0.0, -1.0 / c.s),
      'velocity': (c.dm, c.ds),
  }[check(name, 'parameterization')]


def target(name: str, x0: jax.Array, eps: jax.Array, c: Coefficients) -> jax.Array:
  """The regression target of ``name`` for the pair (x0, eps) that made x = m x0 + s eps."""
  a, b = _basis(name, c)
  return batch_mul(a * jnp.ones_like(c.m), x0) + batch_mul(b * jnp.ones_like(c.m), eps)


def convert(q: jax.Array, x: jax.Array, src: str, dst: str, c: Coefficients) -> jax.Array:
  """The prediction q of kind ``src`` at x, as kind ``dst`` (see the module docstring)."""
  if check(src, 'parameterization') == check(dst, 'parameterization'):
    return q
  ones = jnp.ones_like(c.m)
  a, b = (v * ones for v in _basis(src, c))
  a_out, b_out = (v * ones for v in _basis(dst, c))
  det = c.m * b - c.s * a
  x0 = batch_mul(b / det, x) - batch_mul(c.s / det, q)
  eps = batch_mul(c.m / det, q) - batch_mul(a / det, x)
  return batch_mul(a_out, x0) + batch_mul(b_out, eps)
