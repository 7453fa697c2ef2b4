"""tr((sigma1 sigma2)^{1/2}) of two covariances without a general matrix square root.

FID's cross term needs only the trace of the root, i.e. the sum of the square roots of the
eigenvalues of sigma1 sigma2. With sigma1 = H H^T (H = V diag(sqrt(w)) from sigma1's
eigendecomposition), sigma1 sigma2 = H (H^T sigma2) has the non-zero eigenvalues of the symmetric
positive semi-definite M = H^T sigma2 H, so they are real and >= 0, and
tr((sigma1 sigma2)^{1/2}) = sum_i sqrt(lambda_i(M)).
Symmetric eigendecompositions (``eigh`` of one covariance, ``eigvalsh`` of the other and of M)
replace ``scipy.linalg.sqrtm`` of the non-symmetric product (a Schur decomposition and a
triangular recurrence): faster on 2048-d covariances (``benchmarks/fid_trace.py``), more
accurate where the exact value is known, real by construction (no imaginary part to drop) and
defined for singular covariances (fewer samples than features) without pytorch-fid's 1e-6
diagonal offset. torch-fidelity takes the
eigenvalues of the product itself (``eigvals(sigma1 @ sigma2)``), the same quantity by a
non-symmetric solver.
"""
from __future__ import annotations

import numpy as np

from score_sde.errors import DataError

# An eigenvalue below -PSD_RTOL x the largest one is not round-off: the matrix is not a
# covariance. Round-off of a d x d float64 covariance is ~ d * 1e-16 of its norm, hence
# RANK_RTOL * d: below that, an eigenvalue is an exact zero blurred by rounding.
PSD_RTOL = 1e-6
RANK_RTOL = np.finfo(np.float64).eps


def _check_psd(eigenvalues: np.ndarray, name: str) -> None:
  scale = np.abs(eigenvalues).max(initial=0.0)
  low = eigenvalues.min(initial=0.0)
  if low < -PSD_RTOL * scale:
    raise DataError(f'frechet_distance: {name} has the eigenvalue {low:.3g} (largest '
                    f'{scale:.3g}); covariances must be positive semi-definite.')


def trace_sqrt_product(sigma1, sigma2) -> float:
  """tr((sigma1 sigma2)^{1/2}) = sum_i sqrt(lambda_i(H^T sigma_b H)), sigma_a = H H^T.

  sigma1, sigma2: (d, d) symmetric positive semi-definite, computed in float64. Of the two,
  sigma_a is the one of lower numerical rank r and sigma_b the other (tr sqrt(AB) =
  tr sqrt(BA)); H = V_r diag(sqrt(w_r)) spans sigma_a's range. Eigenvalues below
  ``RANK_RTOL * d`` x the largest are rounding of exact zeros (a covariance of fewer samples
  than dimensions) and are dropped: the r x r matrix H^T sigma_b H, which has the non-zero
  eigenvalues of sigma1 sigma2, then holds no null space whose rounding (~1e-16 each) the
  square roots would turn into ~1e-8 each.
  """
  sigma1 = _symmetric(sigma1)
  sigma2 = _symmetric(sigma2)
  w1, v1 = np.linalg.eigh(sigma1)
  _check_psd(w1, 'sigma1')
  w2 = np.linalg.eigvalsh(sigma2)   # its rank decides which of the two is rooted
  _check_psd(w2, 'sigma2')
  if _nonzero(w2).sum() < _nonzero(w1).sum():
    (w1, v1), sigma2 = np.linalg.eigh(sigma2), sigma1
  keep = _nonzero(w1)
  half = v1[:, keep] * np.sqrt(w1[keep])
  m = half.T @ sigma2 @ half
  lam = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sqrt(np.clip(lam, 0.0, None)).sum())


def _symmetric(sigma) -> np.ndarray:
  sigma = np.asarray(sigma, np.float64)
  return (sigma + sigma.T) / 2


def _nonzero(eigenvalues: np.ndarray) -> np.ndarray:
  """The eigenvalues above the rounding of exact zeros, RANK_RTOL * n x the largest."""
  return eigenvalues > RANK_RTOL * len(eigenvalues) * eigenvalues.max(initial=0.0)
