"""Fast deterministic solvers of the probability flow: DPM-Solver++ (multistep), DDIM, EDM's Heun.

All work in the (sigma, scaled-x) parameterisation of ``schedules``: y = x / m(t) and
sigma = s(t) / m(t), in which every linear SDE's probability flow is the VE-type ODE

    dy / dsigma = (y - D(y, sigma)) / sigma,     D = E[x(0) | x(t)] = (x + s(t)^2 score(x, t)) / m(t),

so one implementation serves VP, sub-VP and VE. Time grids and every step coefficient are
static (host float64); the device loop is one ``lax.scan`` with one score evaluation per step
(DPM-Solver++) or two (Heun). Samplers start from the SDE's prior at t = T.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError
from score_sde.sampling import schedules


def _marginal_coeffs(sde, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """m(t), s(t) on the host, float64 (n,) each, from the SDE's own float32 marginals."""
  return schedules.marginal_coeffs(sde, t)


def denoise(score_fn, y, t, m, s):
  """D(y) = (x + s^2 score(x, t)) / m with x = m y: the data prediction; y (B, ...), scalars t, m, s."""
  x = m * y
  return (x + s**2 * score_fn(x, jnp.full((y.shape[0],), t))) / m


# ---------------------------------------------------------------------------------------------
# DPM-Solver++ multistep (Lu et al. 2022), data prediction, orders 1-3; order 1 is DDIM.
# ---------------------------------------------------------------------------------------------

def dpm_solver_coeffs(lambdas: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-step linear coefficients of the multistep update, with lambda = -log sigma:

      y_{i+1} = (sigma_{i+1} / sigma_i) y_i + c_i0 D_i + c_i1 D_{i-1} + c_i2 D_{i-2}.

  The first steps warm up with lower orders; fewer than 10 steps also lower the order of the
  last ones (DPM-Solver's ``lower_order_final``). Returns ratios (N,) and coefficients (N, 3).
  """
  n = len(lambdas) - 1
  ratios, coeffs = np.exp(lambdas[:-1] - lambdas[1:]), np.zeros((n, 3))
  for i in range(n):
    k = min(order, i + 1, n - i) if n < 10 else min(order, i + 1)
    h = lambdas[i + 1] - lambdas[i]
    phi1 = np.expm1(-h)
    c = np.array([-phi1, 0.0, 0.0])
    if k >= 2:
      r0 = (lambdas[i] - lambdas[i - 1]) / h
      d1_0 = np.array([1.0, -1.0, 0.0]) / r0
    if k == 2:
      c = c - 0.5 * phi1 * d1_0
    if k == 3:
      r1 = (lambdas[i - 1] - lambdas[i - 2]) / h
      d1_1 = np.array([0.0, 1.0, -1.0]) / r1
      d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
      d2 = (d1_0 - d1_1) / (r0 + r1)
      phi2 = phi1 / h + 1.0
      phi3 = phi2 / h - 0.5
      c = c + phi2 * d1 - phi3 * d2
    coeffs[i] = c
  return ratios, coeffs


def get_dpm_solver_sampler(sde, shape, num_steps: int, order: int = 3, eps: float = 1e-3,
                           time_schedule: str = 'logsnr', rho: float = 7.0,
                           grid_path: str | None = None):
  """DPM-Solver++(``order``)M from T to eps in ``num_steps`` steps = ``num_steps`` NFE."""
  if order not in (1, 2, 3):
    raise ConfigError(f'DPM-Solver++ order must be one of [1, 2, 3], got {order}.')
  ts = schedules.get_time_grid(time_schedule, sde, num_steps + 1, eps, rho, grid_path)
  m, s = _marginal_coeffs(sde, ts)
  ratios, coeffs = dpm_solver_coeffs(np.log(m / s), order)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  per_step = (f32(ts[:-1]), f32(m[:-1]), f32(s[:-1]), f32(ratios), f32(coeffs))

  def sampler(rng, score_fn):
    y = sde.prior_sampling(rng, shape) / m[0]

    def step(carry, inputs):
      y, d_prev1, d_prev2 = carry
      t, m_t, s_t, ratio, c = inputs
      d = denoise(score_fn, y, t, m_t, s_t)
      y = ratio * y + c[0] * d + c[1] * d_prev1 + c[2] * d_prev2
      return (y, d, d_prev1), None

    zeros = jnp.zeros(shape, y.dtype)
    (y, _, _), _ = jax.lax.scan(step, (y, zeros, zeros), per_step)
    return m[-1] * y, jnp.asarray(num_steps, jnp.int32)
  return sampler


# ---------------------------------------------------------------------------------------------
# EDM's Heun sampler (Karras et al. 2022, Alg. 2) with optional stochastic churn.
# ---------------------------------------------------------------------------------------------

class _HeunLevels(NamedTuple):
  """Per-step constants (num_steps,): the churned level where the score is first evaluated
  (t_hat, with m, s there) and the level stepped to (t_next, ...; sigma_next = 0 at the end)."""
  t_hat: jax.Array
  m_hat: jax.Array
  s_hat: jax.Array
  noise_std: jax.Array
  t_next: jax.Array
  m_next: jax.Array
  s_next: jax.Array

  @property
  def sigma_hat(self):
    return self.s_hat / self.m_hat

  @property
  def sigma_next(self):
    return self.s_next / self.m_next


def get_heun_sampler(sde, shape, num_steps: int, eps: float = 1e-3, time_schedule: str = 'edm',
                     rho: float = 7.0, S_churn: float = 0.0, S_min: float = 0.0,
                     S_max: float = float('inf'), S_noise: float = 1.0,
                     grid_path: str | None = None):
  """EDM sampler: ``num_steps`` noise levels sigma(T) > ... > sigma(eps), then sigma = 0.

  Each step optionally raises sigma_i to sigma_hat = sigma_i (1 + gamma_i) by adding noise
  (gamma_i = min(S_churn / N, sqrt(2) - 1) for S_min <= sigma_i <= S_max; sigma_hat is capped at
  sigma(T) where the SDE's times end), then takes a Heun step to sigma_{i+1}; the last step, to
  sigma = 0, is Euler. NFE = 2 num_steps - 1.
  """
  ts = schedules.get_time_grid(time_schedule, sde, num_steps, eps, rho, grid_path)
  m, s = _marginal_coeffs(sde, ts)
  sigmas = s / m
  in_range = (sigmas >= S_min) & (sigmas <= S_max)
  gamma = np.where(in_range, min(S_churn / num_steps, np.sqrt(2.0) - 1.0), 0.0)
  sigma_hat = np.minimum(sigmas * (1.0 + gamma), sigmas[0])
  t_hat = np.where(gamma > 0, schedules.time_of_sigma(sde, sigma_hat), ts)
  m_hat, s_hat = _marginal_coeffs(sde, t_hat)
  sigma_hat = s_hat / m_hat
  noise_std = S_noise * np.sqrt(np.maximum(sigma_hat**2 - sigmas**2, 0.0))
  churn = bool(np.any(noise_std > 0))   # no churn: skip drawing noise that would be multiplied by 0
  m_next, s_next = np.append(m[1:], 1.0), np.append(s[1:], 0.0)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  levels = _HeunLevels(f32(t_hat), f32(m_hat), f32(s_hat), f32(noise_std),
                       f32(np.append(ts[1:], 0.0)), f32(m_next), f32(s_next))

  def churned_euler(rng, y, lv, score_fn):
    """Noise up to sigma_hat, then an Euler step to sigma_next: (y_hat, y_next, slope)."""
    y_hat = y + lv.noise_std * jax.random.normal(rng, y.shape, y.dtype) if churn else y
    slope = (y_hat - denoise(score_fn, y_hat, lv.t_hat, lv.m_hat, lv.s_hat)) / lv.sigma_hat
    return y_hat, y_hat + (lv.sigma_next - lv.sigma_hat) * slope, slope

  def sampler(rng, score_fn):
    prior_key, loop_key = jax.random.split(rng)
    y = sde.prior_sampling(prior_key, shape) / m[0]

    def heun_step(y, inputs):
      i, lv = inputs
      y_hat, y_next, slope = churned_euler(jax.random.fold_in(loop_key, i), y, lv, score_fn)
      denoised = denoise(score_fn, y_next, lv.t_next, lv.m_next, lv.s_next)
      slope_next = (y_next - denoised) / lv.sigma_next
      return y_hat + 0.5 * (lv.sigma_next - lv.sigma_hat) * (slope + slope_next), None

    # All steps but the last are Heun; the last, to sigma = 0, is Euler (its y_next is D(y_hat)).
    y, _ = jax.lax.scan(heun_step, y, (jnp.arange(num_steps - 1),
                                       jax.tree.map(lambda a: a[:-1], levels)))
    last = jax.tree.map(lambda a: a[-1], levels)
    _, y, _ = churned_euler(jax.random.fold_in(loop_key, num_steps - 1), y, last, score_fn)
    return y, jnp.asarray(2 * num_steps - 1, jnp.int32)
  return sampler
