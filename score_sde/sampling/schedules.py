"""Time grids for the fast solvers, in the (sigma, scaled-x) parameterisation.

A linear SDE has marginal x(t) = m(t) x(0) + s(t) z, so y = x / m follows the VE-type flow of
y(0) + sigma z with sigma(t) = s(t) / m(t) (VE: sigma(t); VP: sqrt(e^{B(t)} - 1); sub-VP:
2 sinh(B(t) / 2)). Grids are static: they are computed once on the host in float64 and inverted
to times by bisection, so every SDE (and beta schedule) is handled by one code path.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError


def marginal_coeffs(sde, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """m(t), s(t) on the host as float64 (n,) each, from the SDE's own float32 marginals (so the
  coefficients match what a score evaluated at float32 t sees). Safe to call under a jit trace."""
  t = np.atleast_1d(np.asarray(t, np.float64))
  with jax.ensure_compile_time_eval():
    mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), jnp.asarray(t, jnp.float32))
    return np.asarray(mean, np.float64)[:, 0], np.asarray(std, np.float64)


def scaled_sigma(sde, t: np.ndarray) -> np.ndarray:
  """sigma(t) = s(t) / m(t) on the host: (n,) -> (n,) float64."""
  m, s = marginal_coeffs(sde, t)
  return s / m


def time_of_sigma(sde, sigma: np.ndarray, t_lo: float = 0.0, iters: int = 40) -> np.ndarray:
  """Inverse of ``scaled_sigma`` on [t_lo, T] by bisection (sigma(t) is increasing)."""
  sigma = np.asarray(sigma, np.float64)
  lo, hi = np.full_like(sigma, t_lo), np.full_like(sigma, sde.T)
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    below = scaled_sigma(sde, mid) < sigma
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  return 0.5 * (lo + hi)


def _uniform(sde, n, eps, rho):
  del rho
  return np.linspace(sde.T, eps, n)


def _logsnr(sde, n, eps, rho):
  """Uniform in lambda = -log sigma (DPM-Solver's logSNR steps)."""
  del rho
  s_max, s_min = scaled_sigma(sde, np.array([sde.T, eps]))
  sigmas = np.exp(np.linspace(np.log(s_max), np.log(s_min), n))
  return _times(sde, sigmas, eps)


def _edm(sde, n, eps, rho):
  """sigma_i = (sigma_max^(1/rho) + i / (n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (Karras et al.)."""
  s_max, s_min = scaled_sigma(sde, np.array([sde.T, eps]))
  ramp = np.linspace(0.0, 1.0, n)
  sigmas = (s_max**(1 / rho) + ramp * (s_min**(1 / rho) - s_max**(1 / rho)))**rho
  return _times(sde, sigmas, eps)


def _times(sde, sigmas, eps):
  t = time_of_sigma(sde, sigmas, t_lo=0.0)
  t[0], t[-1] = sde.T, eps   # the ends exactly, not to bisection accuracy
  return t


TIME_SCHEDULES = {'uniform': _uniform, 'logsnr': _logsnr, 'edm': _edm}


def get_time_grid(name: str, sde, num_points: int, eps: float, rho: float = 7.0) -> np.ndarray:
  """``num_points`` decreasing times from T to eps (float64, host) on schedule ``name``."""
  if name not in TIME_SCHEDULES:
    raise ConfigError(f'Unknown time_schedule {name!r}; valid: {sorted(TIME_SCHEDULES)}.')
  if num_points < 2:
    raise ConfigError(f'A time grid needs at least 2 points, got {num_points}.')
  return TIME_SCHEDULES[name](sde, num_points, eps, rho)
