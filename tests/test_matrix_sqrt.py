"""tr((sigma1 sigma2)^{1/2}) by symmetric eigendecompositions against scipy's sqrtm and closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from score_sde.errors import DataError
from score_sde.evaluation import matrix_sqrt


def _rotation(rng, d):
  q, r = np.linalg.qr(rng.standard_normal((d, d)))
  return q * np.sign(np.diag(r))


def _covariance(rng, d, condition):
  """U diag(w) U^T with eigenvalues log-spaced from 1 down to 1 / condition."""
  u = _rotation(rng, d)
  return (u * np.logspace(0, -np.log10(condition), d)) @ u.T


@pytest.mark.parametrize('condition', [1.0, 1e4, 1e8])
def test_equals_scipy_sqrtm_trace_to_1e_8(condition):
  rng = np.random.default_rng(int(np.log10(condition)))
  d = 48
  s1, s2 = _covariance(rng, d, condition), _covariance(rng, d, condition)
  expected = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
  assert matrix_sqrt.trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-8, abs=0)


def test_closed_form_for_commuting_singular_covariances():
  # S1 = U diag(a) U^T, S2 = U diag(b) U^T  =>  tr sqrt(S1 S2) = sum sqrt(a b), also when a
  # and b have zeros (rank-deficient covariances: fewer samples than features).
  rng = np.random.default_rng(5)
  d = 40
  u = _rotation(rng, d)
  a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
  a[::3], b[1::4] = 0.0, 0.0
  got = matrix_sqrt.trace_sqrt_product((u * a) @ u.T, (u * b) @ u.T)
  assert got == pytest.approx(np.sqrt(a * b).sum(), rel=1e-8)


def test_symmetric_in_its_arguments_for_sample_covariances_with_fewer_samples_than_dims():
  # tr sqrt(S1 S2) = tr sqrt(S2 S1); with S1 singular the two orders take different roots.
  rng = np.random.default_rng(6)
  s1 = np.cov(rng.standard_normal((10, 30)), rowvar=False)
  s2 = np.cov(rng.standard_normal((100, 30)) @ rng.standard_normal((30, 30)), rowvar=False)
  forward = matrix_sqrt.trace_sqrt_product(s1, s2)
  assert forward == pytest.approx(matrix_sqrt.trace_sqrt_product(s2, s1), rel=1e-8)
  assert forward > 0


@pytest.mark.parametrize('which', ['sigma1', 'sigma2'])
def test_a_matrix_that_is_not_a_covariance_is_a_data_error(which):
  eye, bad = np.eye(3), np.diag([1.0, 1.0, -0.5])
  args = (bad, eye) if which == 'sigma1' else (eye, bad)
  with pytest.raises(DataError, match=f'{which} has the eigenvalue -0.5'):
    matrix_sqrt.trace_sqrt_product(*args)
