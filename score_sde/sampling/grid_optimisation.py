"""Optimised time grids: choose a fixed-grid solver's n steps to minimise its discretisation error.

Objective (a reference-trajectory fit): for prior draws x_T = m(T) y_T and the solver's end points
y_n(x_T; grid) at t = eps, the mean squared distance to a many-step reference solution of the
same probability-flow ODE from the same draws,

    L(grid) = E_{x_T} || m(eps) (y_n(x_T; grid) - y_ref(x_T)) ||^2,

where y_ref is UniPC-3 (bh2) on ``ref_steps`` logSNR-uniform steps. The grid is parameterised by
its log-sigma increments: with sigma_0 = sigma(T) and sigma_n = sigma(eps) fixed,

    log sigma_i = log sigma_0 + (log sigma_n - log sigma_0) sum_{j < i} softmax(u)_j,

so every u gives a decreasing grid with the right ends; u (n,) is optimised with Adam (optax)
from the ``init`` schedule. Times are t_i = sigma^{-1}(sigma_i), by bisection with one implicit-
function step so that gradients flow through them; the score function is differentiated through
as it is (an exact score or a trained network's ``score_fn``). Each step's coefficients are
recomputed from the grid in ``jax.numpy`` by the solver's own coefficient function.

Supported solvers: UniPC (``method='unipc'``, any order and variant). ``save_grid`` writes the
grid (``grid_files``); any fixed-grid sampler reads it (``time_schedule='optimised'`` and
``sampling.grid_path``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde.errors import ConfigError
from score_sde.sampling import grid_files, schedules, unipc


def _sigma_of_t(sde, t):
  """sigma(t) = s(t) / m(t) in jax.numpy: (n,) -> (n,)."""
  mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
  return std / mean[:, 0]


def times_of_sigma(sde, sigma, iters: int = 48):
  """t(sigma) on [0, T], differentiable in sigma: bisection (no gradient), then one Newton step
  t + (sigma - sigma(t)) / sigma'(t), whose derivative is the implicit function's 1 / sigma'(t)."""
  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = _sigma_of_t(sde, mid) < sigma
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
  lo, hi = jax.lax.fori_loop(0, iters, bisect, (jnp.zeros_like(sigma), jnp.full_like(sigma, sde.T)))
  t = jax.lax.stop_gradient(0.5 * (lo + hi))
  sigma_t, slope = jax.jvp(lambda t: _sigma_of_t(sde, t), (t,), (jnp.ones_like(t),))
  return t + (sigma - jax.lax.stop_gradient(sigma_t)) / jax.lax.stop_gradient(slope)


def grid_from_increments(sde, u, eps: float):
  """Times (n + 1,) of the grid whose log-sigma increments are softmax(u) of the whole range."""
  log_ends = jnp.log(jnp.asarray(schedules.scaled_sigma(sde, np.array([sde.T, eps])), jnp.float32))
  fractions = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jax.nn.softmax(u))])
  sigmas = jnp.exp(log_ends[0] + (log_ends[1] - log_ends[0]) * fractions)
  inner = times_of_sigma(sde, sigmas[1:-1])
  return jnp.concatenate([jnp.full((1,), sde.T), inner, jnp.full((1,), eps)])


def increments_of_grid(sde, times) -> np.ndarray:
  """The u (n,) with ``grid_from_increments(sde, u, eps) == times``: log of the fractions."""
  log_sigma = np.log(schedules.scaled_sigma(sde, np.asarray(times, np.float64)))
  return np.log(np.diff(log_sigma) / (log_sigma[-1] - log_sigma[0]))


def _unipc_solve(order, variant):
  def solve(sde, score_fn, y, ts):
    mean, std = sde.marginal_prob(jnp.ones((ts.shape[0], 1)), ts)
    m, s = mean[:, 0], std
    coeffs = unipc.unipc_coeffs(jnp.log(m / s), order, variant, xp=jnp)
    return m[-1] * unipc.unipc_solve(score_fn, y, ts, m, s, coeffs)
  return solve


SOLVERS = {'unipc': _unipc_solve}


def get_grid_solver(method: str, order: int = 3, variant: str = 'bh1'):
  """``solve(sde, score_fn, y_T, ts) -> x_eps``, differentiable in the times ts (n + 1,)."""
  if method not in SOLVERS:
    raise ConfigError(f'No grid optimisation for method {method!r}; valid: {sorted(SOLVERS)}.')
  return SOLVERS[method](order, variant)


def reference_solution(sde, score_fn, y_T, eps: float, ref_steps: int = 256):
  """End points x_eps of the probability flow from y_T (scaled), by UniPC-3 bh2 on logSNR steps
  (host coefficients: a many-step grid traced through ``jax.numpy`` would take minutes to compile)."""
  ts = schedules.get_time_grid('logsnr', sde, ref_steps + 1, eps)
  m, s = schedules.marginal_coeffs(sde, ts)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  coeffs = unipc.UniPCCoeffs(*map(f32, unipc.unipc_coeffs(np.log(m / s), 3, 'bh2')))
  solve = jax.jit(lambda y: unipc.unipc_solve(score_fn, y, f32(ts), f32(m), f32(s), coeffs))
  return m[-1] * solve(y_T)


def optimise_grid(sde, score_fn, shape, num_steps: int, method: str = 'unipc', order: int = 3,
                  variant: str = 'bh1', eps: float = 1e-3, init: str = 'logsnr',
                  iterations: int = 300, learning_rate: float = 0.05, ref_steps: int = 256,
                  seed: int = 0):
  """Optimises the ``num_steps``-step grid of ``method`` for ``score_fn`` on prior draws of
  ``shape`` (B, ...), starting from the ``init`` schedule. Returns (times (num_steps + 1,)
  float64, record dict with the method and the objective before and after)."""
  if num_steps < 2:
    raise ConfigError(f'A grid to optimise needs num_steps >= 2, got {num_steps}.')
  solve = get_grid_solver(method, order, variant)
  m_T = float(schedules.marginal_coeffs(sde, np.array([sde.T]))[0][0])
  y_T = sde.prior_sampling(jax.random.PRNGKey(seed), shape) / m_T
  x_ref = reference_solution(sde, score_fn, y_T, eps, ref_steps)

  def loss_fn(u):
    x = solve(sde, score_fn, y_T, grid_from_increments(sde, u, eps))
    return jnp.mean(jnp.sum((x - x_ref).reshape(x.shape[0], -1)**2, axis=-1))

  optimiser = optax.adam(learning_rate)

  @jax.jit
  def update(u, opt_state):
    loss, grad = jax.value_and_grad(loss_fn)(u)
    updates, opt_state = optimiser.update(grad, opt_state)
    return optax.apply_updates(u, updates), opt_state, loss

  u = jnp.asarray(increments_of_grid(
      sde, schedules.get_time_grid(init, sde, num_steps + 1, eps)), jnp.float32)
  opt_state, best = optimiser.init(u), (np.inf, u)
  losses = []
  for _ in range(iterations):
    new_u, opt_state, loss = update(u, opt_state)
    losses.append(float(loss))
    best = min(best, (losses[-1], u), key=lambda b: b[0])   # loss is of u, before the update
    u = new_u
  times = np.asarray(grid_from_increments(sde, best[1], eps), np.float64)
  times[0], times[-1] = sde.T, eps
  record = {'method': method, 'order': order, 'variant': variant, 'num_steps': num_steps,
            'init': init, 'objective_init': losses[0], 'objective_final': best[0],
            'iterations': iterations, 'num_prior_draws': int(shape[0])}
  return times, record


def save_grid(path: str, times, sde, optimised_for: dict) -> str:
  """Writes ``optimise_grid``'s times (n + 1,) and record for ``sde`` to ``path`` (JSON)."""
  return grid_files.write_grid(path, times, schedules.scaled_sigma(sde, np.asarray(times)), sde,
                               optimised_for)
