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
from score_sde.sampling import grid_files


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
OPTIMISED = 'optimised'   # a grid file of grid_optimisation (sampling.grid_path)
SCHEDULE_NAMES = tuple(sorted(TIME_SCHEDULES)) + (OPTIMISED,)


def optimised_grid(path: str | None, sde, num_points: int, eps: float) -> np.ndarray:
  """The times (``num_points``,) of the grid file at ``path`` (``grid_files``), checked against
  this sampler: the same number of points, the same ends T and eps, and the same noise levels
  sigma(t) at its times (a grid made for another SDE or noise schedule is refused)."""
  record = grid_files.read_grid(path)
  times = np.asarray(record['times'], np.float64)
  made_for = record.get('optimised_for', {})
  if times.shape[0] != num_points:
    raise ConfigError(
        f'Optimised time grid {path!r} has {times.shape[0]} points (made for '
        f"{made_for.get('method', '?')} with {made_for.get('num_steps', '?')} steps); this "
        f'sampler needs {num_points}: optimise a grid for this number of steps.')
  if not np.isclose(times[-1], eps, rtol=1e-6, atol=0.0) or not np.isclose(times[0], sde.T):
    raise ConfigError(f'Optimised time grid {path!r} runs from t = {times[0]:g} to '
                      f'{times[-1]:g}; this sampler runs from {sde.T:g} to eps = {eps:g}.')
  if not np.allclose(scaled_sigma(sde, times), record['sigmas'], rtol=1e-4):
    raise ConfigError(f"Optimised time grid {path!r} was made for {record['sde']}, whose noise "
                      f'levels differ from those of {grid_files.describe_sde(sde)}.')
  return times


def get_time_grid(name: str, sde, num_points: int, eps: float, rho: float = 7.0,
                  grid_path: str | None = None) -> np.ndarray:
  """``num_points`` decreasing times from T to eps (float64, host) on schedule ``name``; for
  'optimised', those of the grid file ``grid_path``."""
  if name not in SCHEDULE_NAMES:
    raise ConfigError(f'Unknown time_schedule {name!r}; valid: {list(SCHEDULE_NAMES)}.')
  if num_points < 2:
    raise ConfigError(f'A time grid needs at least 2 points, got {num_points}.')
  if name == OPTIMISED:
    return optimised_grid(grid_path, sde, num_points, eps)
  return TIME_SCHEDULES[name](sde, num_points, eps, rho)
