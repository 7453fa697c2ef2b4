"""How well samples fit a ``toy.GaussianMixture``: the metric of the sampler tests and benchmark.

Each sample is assigned to its nearest mode mean. For mode k with weight w_k and std sigma_k,

  weight error   e_k = |n_k / n - w_k|,                 exact-sample sd  sqrt(w_k (1 - w_k) / n)
  std ratio      r_k = sqrt(mean ||x - mu_k||^2 / D) / sigma_k,   exact-sample sd  1 / sqrt(2 n_k D)

and ``z`` is the largest of all these errors in units of their exact-sample standard deviation.
For n exact samples z is the maximum of 2K roughly standard-normal magnitudes (about 2-3 for
K = 8); mass between modes, wrong weights, or too wide / narrow modes drive it up. The mixture's
modes must be well separated (nearest-mode assignment is then practically exact).
"""
from __future__ import annotations

import numpy as np


def mixture_fit(samples, gmm) -> dict[str, float]:
  """samples (n, D) vs. the isotropic mixture ``gmm``: weight_err, std_err (max_k), and z."""
  x = np.asarray(samples, np.float64)
  n, dim = x.shape
  means, stds = np.asarray(gmm.means, np.float64), np.asarray(gmm.stds, np.float64)[:, 0]
  weights = np.asarray(gmm.weights, np.float64)
  if not np.all(np.isfinite(x)):
    return {'weight_err': np.inf, 'std_err': np.inf, 'z': np.inf}
  k = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
  counts = np.bincount(k, minlength=len(weights))
  weight_err = np.abs(counts / n - weights)
  z_weight = weight_err / np.sqrt(weights * (1 - weights) / n)
  sq = ((x - means[k]) ** 2).sum(-1)
  ratio = np.sqrt(np.bincount(k, sq, minlength=len(weights)) / np.maximum(counts, 1) / dim) / stds
  std_err = np.where(counts > 0, np.abs(ratio - 1.0), np.inf)
  z_std = std_err * np.sqrt(2 * np.maximum(counts, 1) * dim)
  return {'weight_err': float(weight_err.max()), 'std_err': float(std_err.max()),
          'z': float(max(z_weight.max(), z_std.max()))}
