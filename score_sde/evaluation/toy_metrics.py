"""Sample-quality metrics for 2-D (low-dimensional) data that need no feature network.

``nll``: the exact negative log-likelihood of samples under the *data* density p (nats per
  sample), where p is known (``DENSITIES``: the Gaussian mixture):  E_q[-log p(x)], the
  cross-entropy H(q, p) of the sample distribution q to the data. It is lowest for samples on the
  modes and large for samples between them (the data's own value is its entropy H(p)); it does
  not see missing modes, so read it beside a distance.
``sliced_wasserstein``: SW_p(q, p) = (E_theta W_p^p(theta#q, theta#p))^(1/p) over
  ``num_projections`` directions theta uniform on the sphere, each 1-D W_p between the two
  empirical measures computed exactly (quantile functions on the merged grid).
``mmd``: the unbiased U-statistic of MMD^2 with the Gaussian kernel
  k(x, y) = exp(-|x - y|^2 / (2 h^2)) of bandwidth h, and its standard error (the first-order
  Hoeffding term: Var ~ 4 Var_i(h_x(x_i)) / n + 4 Var_j(h_y(y_j)) / m).

Each is one module-level ``jax.jit`` (compiled once per input shape); ``compute`` evaluates any
of them (``METRICS``) for a dataset name and returns plain floats.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.datasets import toy
from score_sde.errors import ConfigError, DataError

# Datasets whose data density log p(x) is known exactly.
DENSITIES: dict[str, Callable[[], toy.GaussianMixture]] = {
    'gaussian_mixture': toy.gaussian_mixture,
}


@jax.jit
def _nll(samples, means, stds, weights):
  gmm = toy.GaussianMixture(means, stds, weights)
  return -gmm.log_prob(samples)


def nll(samples, density: toy.GaussianMixture) -> tuple[float, float]:
  """Mean and standard error of -log p(x) (nats) over samples (N, D) under ``density``."""
  samples = _check_points(samples, 'samples')
  values = np.asarray(_nll(samples, density.means, density.stds, density.weights), np.float64)
  return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Interval lengths and the indices into sorted x (n) and y (m) on each interval of [0, 1]
  between the merged breakpoints {i/n} U {j/m}: the 1-D quantile functions are constant there."""
  u = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
  mid, width = (u[1:] + u[:-1]) / 2, np.diff(u)
  return width, np.floor(mid * n).astype(np.int32), np.floor(mid * m).astype(np.int32)


@functools.partial(jax.jit, static_argnames=('num_projections', 'p'))
def sliced_wasserstein_per_projection(x, y, rng, num_projections: int, p: float):
  """E_theta W_p^p over the projections, and the per-projection values (num_projections,)."""
  theta = jax.random.normal(rng, (num_projections, x.shape[1]), jnp.float32)
  theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
  px, py = jnp.sort(x @ theta.T, axis=0), jnp.sort(y @ theta.T, axis=0)     # (n, L), (m, L)
  width, ix, iy = _quantile_grid(x.shape[0], y.shape[0])
  per_proj = jnp.sum(width[:, None] * jnp.abs(px[ix] - py[iy])**p, axis=0)
  return per_proj.mean(), per_proj


def sliced_wasserstein(x, y, rng, num_projections: int = 256, p: int = 2) -> float:
  """SW_p between the empirical measures of x (n, D) and y (m, D) (module docstring)."""
  x, y = _check_points(x, 'x'), _check_points(y, 'y')
  pp, _ = sliced_wasserstein_per_projection(x, y, rng, num_projections=num_projections, p=float(p))
  return float(pp) ** (1.0 / p)


@jax.jit
def _mmd(x, y, bandwidth):
  def gram(a, b):
    d2 = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T
    return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * bandwidth**2))
  n, m = x.shape[0], y.shape[0]
  kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
  # Row means without the diagonal k(x_i, x_i) = 1: the U-statistic's kernel pairs i != j.
  rxx = (kxx.sum(1) - 1.0) / (n - 1)
  ryy = (kyy.sum(1) - 1.0) / (m - 1)
  hx, hy = rxx - kxy.mean(1), ryy - kxy.mean(0)
  mmd2 = rxx.mean() + ryy.mean() - 2 * kxy.mean()
  var = 4 * jnp.var(hx, ddof=1) / n + 4 * jnp.var(hy, ddof=1) / m
  return mmd2, jnp.sqrt(var)


def mmd(x, y, bandwidth: float) -> tuple[float, float]:
  """Unbiased MMD^2 of x (n, D) and y (m, D), Gaussian kernel of ``bandwidth``; (value, std err).

  Unbiased: it averages to the population MMD^2 (0 for equal distributions), so single values
  can be slightly negative.
  """
  x, y = _check_points(x, 'x'), _check_points(y, 'y')
  if not bandwidth > 0:
    raise ConfigError(f'MMD bandwidth must be > 0, got {bandwidth}.')
  value, std_err = _mmd(x, y, jnp.float32(bandwidth))
  return float(value), float(std_err)


@functools.lru_cache(maxsize=None)
def _jitted_toy_sampler(dataset: str):
  return jax.jit(toy.get_toy_sampler(dataset), static_argnums=1)


def reference_data(dataset: str, num: int, seed: int = 0) -> np.ndarray:
  """``num`` data points (num, D) that samples are compared with: fresh draws of the toy
  distribution, fixed by ``seed`` and independent of the training data stream."""
  rng = jax.random.fold_in(jax.random.PRNGKey(20210101), seed)
  return np.asarray(_jitted_toy_sampler(dataset)(rng, num))


def _check_points(x, name: str) -> jax.Array:
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 2 or x.shape[0] < 2:
    raise DataError(f'{name} must be points of shape (N >= 2, D), got shape {x.shape}.')
  return x


# name -> fn(samples, data, dataset_name, rng, options) -> {'value': float, 'std_err': float|None}
# or None where the metric does not apply to the dataset.
def _nll_metric(samples, data, dataset, rng, options):
  del data, rng, options
  if dataset not in DENSITIES:
    return None
  value, std_err = nll(samples, DENSITIES[dataset]())
  return {'value': value, 'std_err': std_err}


def _sw_metric(samples, data, dataset, rng, options):
  del dataset
  value = sliced_wasserstein(samples, data, rng, num_projections=options.get('sw_projections', 256),
                             p=options.get('sw_p', 2))
  return {'value': value, 'std_err': None}


def _mmd_metric(samples, data, dataset, rng, options):
  del dataset, rng
  value, std_err = mmd(samples, data, options.get('mmd_bandwidth', 0.1))
  return {'value': value, 'std_err': std_err}


METRICS = {
    'nll': _nll_metric,
    'sliced_wasserstein': _sw_metric,
    'mmd': _mmd_metric,
}


def check_metric_names(names) -> None:
  unknown = [n for n in names if n not in METRICS]
  if unknown:
    raise ConfigError(f'Unknown toy metric {unknown[0]!r}; valid: {sorted(METRICS)}.')


def compute(names, samples, data, dataset: str, rng, options: dict | None = None) -> dict:
  """{name: {'value', 'std_err'} or None} for the metrics ``names`` of samples vs data points.

  ``options``: ``sw_projections`` (256), ``sw_p`` (2), ``mmd_bandwidth`` (0.1, data units).
  """
  check_metric_names(names)
  options = dict(options or {})
  return {name: METRICS[name](samples, data, dataset, jax.random.fold_in(rng, i), options)
          for i, name in enumerate(names)}
