"""Exact likelihoods through the probability-flow ODE, integrated inside JAX by diffrax.

The probability-flow ODE of a forward SDE dx = f(x, t) dt + g(t) dw,

    dx/dt = v(x, t) = f(x, t) - g(t)^2 score(x, t) / 2,                 (``sde.reverse(...,
                                                                          probability_flow=True)``)

has the same marginals p_t as the SDE. Along one of its solutions the instantaneous change of
variables (Chen et al. 2018) gives d/dt log p_t(x(t)) = -div_x v(x(t), t), so integrating from
x(eps) = x to z = x(T):

    log p_eps(x) = log p_T(z) + int_eps^T div_x v(x(t), t) dt
                 ~ sde.prior_logp(z) + delta_logp.                                       (*)

This is the sign convention of the paper's ``likelihood.py`` (``prior_logp + delta_logp``). The
divergence is exact (the Jacobian trace, for low-dimensional data) or the Hutchinson–Skilling
estimate eps^T (dv/dx) eps with one probe eps per example, fixed along the path; E[eps eps^T] = I
makes it unbiased for the divergence, hence (the integral being linear) for log p_eps.

x(t) and delta_logp(t) are one ODE state, integrated from t = eps to T by an adaptive
Runge–Kutta method (Dopri5 or Tsit5) with a PID step-size controller at ``rtol``/``atol``, the
whole batch as one state (as the paper's RK45 over the flattened batch). Everything is
traceable: call ``likelihood_fn`` inside ``jit`` / ``pmap`` / ``vmap``; called at top level it
compiles once per ``score_fn`` and input shape and reuses the executable (``compile_once``).

Units: ``logp`` is in nats per example for data in the model's space; ``bits_per_dim`` turns it
into bits/dim of 8-bit images (the dequantization and scaling bookkeeping is derived there).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from score_sde.compile_once import compile_once
from score_sde.errors import ConfigError, DataError

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------------
# Divergence of the drift. Each takes (fn, x, probe) with fn: (B, ...) -> (B, ...) acting on
# every example separately, and returns (fn(x), div) with div: (B,). One call of fn per call
# (linearized once), so the NFE is the number of vector-field evaluations.
# ---------------------------------------------------------------------------------------------

def _sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def hutchinson_divergence(fn, x, probe):
  """(fn(x), probe^T J probe) per example, J = d fn / dx; one forward-mode JVP."""
  value, jvp = jax.jvp(fn, (x,), (probe,))
  return value, _sum_except_batch(jvp * probe)


def exact_divergence(fn, x, probe=None):
  """(fn(x), tr J) per example, by D JVPs of one linearization along the unit vectors e_i.

  The i-th tangent is e_i in every example at once; since examples do not interact (a score
  model in eval mode acts on each example separately), its JVP holds column i of every
  example's Jacobian, and the trace picks the diagonal. Memory O(D^2 B): low-dimensional data.
  """
  del probe
  batch, dim = x.shape[0], math.prod(x.shape[1:])
  value, jvp_fn = jax.linearize(fn, x)
  eye = jnp.eye(dim, dtype=x.dtype)
  tangents = jnp.broadcast_to(eye[:, None, :], (dim, batch, dim)).reshape((dim,) + x.shape)
  columns = jax.vmap(jvp_fn)(tangents).reshape(dim, batch, dim)       # [i, b, j] = J_b[j, i]
  return value, jnp.einsum('ibi->b', columns)


def _rademacher(rng, shape, dtype):
  return jax.random.rademacher(rng, shape, dtype=dtype)


def _gaussian(rng, shape, dtype):
  return jax.random.normal(rng, shape, dtype=dtype)


def _no_probe(rng, shape, dtype):
  del rng, shape, dtype
  return None


# name -> (probe sampler, divergence). The paper spelled them 'Rademacher' / 'Gaussian'.
HUTCHINSON_TYPES = {
    'rademacher': (_rademacher, hutchinson_divergence),
    'gaussian': (_gaussian, hutchinson_divergence),
    'none': (_no_probe, exact_divergence),
}

# name -> (solver, new vector-field evaluations per attempted step). Both are 7-stage FSAL
# methods: the first stage of a step is the last of the previous one, so 6 per step (accepted
# or rejected), plus one for the first stage at t = eps (diffrax 0.7 takes the initial step
# size from it at no further cost). tests/test_likelihood.py counts real calls to check this.
# scan_kind='lax': a plain loop over the stages, 2-3x faster on CPU than diffrax's default
# checkpointed loop, which only reverse-mode differentiation needs (we solve forward only).
SOLVERS = {
    'dopri5': (functools.partial(diffrax.Dopri5, scan_kind='lax'), 6),
    'tsit5': (functools.partial(diffrax.Tsit5, scan_kind='lax'), 6),
}
_START_EVALS = 1


def _lookup(table: dict, name: str, what: str):
  key = name.lower() if isinstance(name, str) else name
  if key not in table:
    raise ConfigError(f'Unknown {what} {name!r}; valid: {sorted(table)}.')
  return table[key]


def _check_input(x) -> jax.Array:
  """Shape, dtype and finiteness checks with messages a user can act on (before any compile)."""
  if not hasattr(x, 'shape') or x.ndim < 2 or x.shape[0] < 1:
    raise DataError(f'x must be a batch (B, ...) with B >= 1 and at least one data axis, got '
                    f'shape {getattr(x, "shape", type(x))}; for one example use x[None].')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise DataError(f'x must be floating point (data in the model\'s range), got {x.dtype}.')
  message = 'likelihood_fn: x contains NaN or inf; the log-likelihood of such data is undefined.'
  if not isinstance(x, jax.core.Tracer):
    if not np.all(np.isfinite(np.asarray(x))):
      raise DataError(message)
    return jnp.asarray(x)
  return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), message)


def _check_score_fn(score_fn: ScoreFn, x) -> None:
  """score_fn must map (x, t) of shapes (B, ...), (B,) to x's shape (checked at trace time)."""
  t = jax.ShapeDtypeStruct((x.shape[0],), x.dtype)
  try:
    out = jax.eval_shape(score_fn, jax.ShapeDtypeStruct(x.shape, x.dtype), t)
  except Exception as e:  # the model or closed-form score does not accept this data shape
    raise DataError(f'score_fn(x, t) failed for x of shape {x.shape} and t of shape '
                    f'{t.shape}: {type(e).__name__}: {str(e)[:300]}') from e
  if getattr(out, 'shape', None) != x.shape:
    raise DataError(f'score_fn(x, t) must return x\'s shape {x.shape}, got '
                    f'{getattr(out, "shape", type(out))}.')


def get_likelihood_fn(sde, hutchinson_type: str = 'rademacher', rtol: float = 1e-5,
                      atol: float = 1e-5, eps: float = 1e-5, solver: str = 'dopri5',
                      max_steps: int = 16384):
  """Builds ``likelihood_fn(rng, score_fn, x) -> (logp, z, nfe)`` for ``sde``.

  Args:
    sde: a forward SDE of ``sde_lib``; its ``reverse(score_fn, probability_flow=True)`` gives
      the ODE's drift and ``prior_logp`` the log-density of the prior at the end point.
    hutchinson_type: 'rademacher' | 'gaussian' (unbiased trace estimates, for images) | 'none'
      (the exact Jacobian trace; O(D) JVPs per evaluation, for low-dimensional data).
    rtol, atol: the step-size controller's tolerances on the joint state (x, delta_logp).
    eps: the ODE starts at t = eps > 0, so ``logp`` is log p_eps(x) (eq. (*) above).
    solver: 'dopri5' (the paper's RK45 pair) | 'tsit5'.
    max_steps: the solve fails with an error past this many steps.

  Returns:
    ``likelihood_fn(rng, score_fn, x)`` with x: (B, ...) in the model's data space and
    score_fn(x, t): ((B, ...), (B,)) -> (B, ...). It returns ``logp`` (B,) in nats (eq. (*)),
    ``z`` = x(T) with x's shape, and ``nfe``, the int32 number of vector-field evaluations,
    each one call of ``score_fn`` on the batch (differentiated forward-mode for the divergence).
    Under ``vmap`` each instance reports its own count (the batched loop runs as long as the
    slowest instance needs).
  """
  sample_probe, divergence = _lookup(HUTCHINSON_TYPES, hutchinson_type, 'hutchinson_type')
  solver_cls, evals_per_step = _lookup(SOLVERS, solver, 'solver')
  if not (rtol > 0 and atol > 0):
    raise ConfigError(f'rtol and atol must be positive, got rtol={rtol}, atol={atol}.')
  if not 0 < eps < sde.T:
    raise ConfigError(f'eps must lie in (0, T = {sde.T}), got {eps}.')

  def solve(rng, score_fn: ScoreFn, x):
    _check_score_fn(score_fn, x)
    batch = x.shape[0]
    flow = sde.reverse(score_fn, probability_flow=True)
    probe = sample_probe(rng, x.shape, x.dtype)

    def vector_field(t, state, args):
      xt, _ = state
      vec_t = jnp.full((batch,), t, xt.dtype)
      return divergence(lambda y: flow.sde(y, vec_t)[0], xt, probe)

    y0 = (x, jnp.zeros((batch,), x.dtype))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver_cls(), t0=eps, t1=sde.T, dt0=None, y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True), max_steps=max_steps,
        adjoint=diffrax.ForwardMode())   # no reverse-mode tape: a plain while loop
    z, delta_logp = sol.ys[0][0], sol.ys[1][0]
    nfe = _START_EVALS + evals_per_step * sol.stats['num_steps']
    return sde.prior_logp(z) + delta_logp, z, jnp.asarray(nfe, jnp.int32)

  solve = compile_once(solve)

  def likelihood_fn(rng, score_fn: ScoreFn, x):
    return solve(rng, score_fn, _check_input(x))

  likelihood_fn.cache_size = solve.cache_size
  return likelihood_fn


# ---------------------------------------------------------------------------------------------
# Bits per dimension.
# ---------------------------------------------------------------------------------------------

def bpd_offset(inverse_scaler: Callable | None = None, num_bins: int = 256) -> float:
  """The constant c in bpd = -logp / (D ln 2) + c; see ``bits_per_dim``.

  c = log2(num_bins) + log2 |d inverse_scaler / dx|: 8 for [0, 1] data, 7 for [-1, 1] data.
  """
  if inverse_scaler is None:
    slope = 1.0
  else:
    with jax.ensure_compile_time_eval():   # a constant, also when called inside jit / pmap
      slope, slope_1 = (float(jax.grad(lambda v: inverse_scaler(v) * 1.0)(jnp.float32(a)))
                        for a in (0.0, 1.0))
    if not np.isclose(slope, slope_1) or slope == 0:
      raise DataError('inverse_scaler must be affine and invertible (a data scaler such as '
                      f'x -> (x + 1) / 2); its slope is {slope} at 0 and {slope_1} at 1.')
  if num_bins < 2:
    raise DataError(f'num_bins must be >= 2, got {num_bins}.')
  return math.log2(num_bins) + math.log2(abs(slope))


def bits_per_dim(logp, data_shape, inverse_scaler: Callable | None = None,
                 num_bins: int = 256) -> jax.Array:
  """Bits per dimension of 8-bit data from the model's log-density ``logp`` (B,) in nats.

  Bookkeeping (the paper's conventions; ``data_shape`` = per-example shape, D = its size):

  1. Data are integers k in {0, ..., K-1}^D (K = ``num_bins`` = 256). Uniform dequantization
     gives y = (k + u) / K in [0, 1]^D, u ~ U[0, 1)^D (``data.uniform_dequantization``).
  2. The model is a density p_x over x = s(y), the data scaler: s(y) = y (``centered=False``)
     or s(y) = 2y - 1 (``centered=True``), so x = s(y) with the inverse scaler y = s^{-1}(x)
     of slope a = dy/dx (1 or 1/2). Change of variables: p_y(y) = p_x(x) / a^D.
  3. The discrete model P(k) = int_{[0,1)^D} p_y((k + u) / K) K^{-D} du gives, by Jensen,
     -log P(k) <= E_u[-log p_y(y)] + D log K (Ho et al. 2019; Theis et al. 2016), so
     -log2 P(k) / D <= E_u[-log p_x(x) / (D ln 2)] + log2(a) + log2(K).

  So bpd = -logp / (D ln 2) + log2(K) + log2(a): + 8 for [0, 1] data and + 8 - 1 = + 7 for
  [-1, 1] data (the factor 2 stretching [0, 1] to [-1, 1] divides densities by 2^D: one bit per
  dimension). With dequantized x, its average over the data is an upper bound on the discrete
  model's bits/dim (the number papers report).

  Args:
    logp: (B,) log-densities in nats of data in the model's space.
    data_shape: per-example shape, e.g. (32, 32, 3).
    inverse_scaler: the model's space -> [0, 1] (``datasets.get_data_inverse_scaler(config)``);
      None for data already in [0, 1].
    num_bins: quantization levels K per dimension.

  Returns:
    (B,) bits per dimension.
  """
  dim = math.prod(tuple(data_shape))
  return -jnp.asarray(logp) / (dim * math.log(2.0)) + bpd_offset(inverse_scaler, num_bins)
