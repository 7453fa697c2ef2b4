"""FID / KID / IS (``evaluation.metrics``) against float64 references and closed forms."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.special
from scipy import stats

from score_sde.errors import ConfigError, DataError
from score_sde.evaluation import metrics


def _random_rotation(rng, d):
  q, r = np.linalg.qr(rng.standard_normal((d, d)))
  return q * np.sign(np.diag(r))


def _gaussian_features(rng, n, mu, sigma):
  return rng.multivariate_normal(mu, sigma, size=n)


def _eig_frechet(mu1, sigma1, mu2, sigma2):
  """Independent float64 reference: tr sqrt(S1 S2) = sum_i sqrt(lambda_i(S1 S2))."""
  lam = scipy.linalg.eigvals(sigma1 @ sigma2).real.clip(0)
  return ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(lam).sum()


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((50, 6)).astype(np.float32)
  mu, sigma = metrics.feature_statistics(x)
  x64 = x.astype(np.float64)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, x64.sum(0) / 50, rtol=1e-12)
  centred = x64 - x64.mean(0)
  np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)


def test_frechet_distance_of_sampled_gaussians_matches_float64_eigen_reference():
  rng = np.random.default_rng(1)
  d = 8
  a = rng.standard_normal((d, d))
  b = rng.standard_normal((d, d))
  feats1 = _gaussian_features(rng, 400, rng.standard_normal(d), a @ a.T / d + 0.1 * np.eye(d))
  feats2 = _gaussian_features(rng, 300, rng.standard_normal(d), b @ b.T / d + 0.1 * np.eye(d))
  s1, s2 = metrics.feature_statistics(feats1), metrics.feature_statistics(feats2)
  fid = metrics.frechet_distance(*s1, *s2)
  assert fid == pytest.approx(_eig_frechet(*s1, *s2), rel=1e-10)
  assert fid > 1.0      # different distributions: not a vacuous match at 0
  assert metrics.frechet_distance(*s1, *s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_closed_form_for_covariances_sharing_eigenvectors():
  # S1 = U diag(a) U^T, S2 = U diag(b) U^T  =>  tr sqrt(S1 S2) = sum sqrt(a b).
  rng = np.random.default_rng(2)
  d = 16
  u = _random_rotation(rng, d)
  eig1, eig2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(eig1) - np.sqrt(eig2)) ** 2).sum()
  got = metrics.frechet_distance(mu1, u @ np.diag(eig1) @ u.T, mu2, u @ np.diag(eig2) @ u.T)
  assert got == pytest.approx(expected, rel=1e-10)
  got_diag = metrics.frechet_distance(mu1, np.diag(eig1), mu2, np.diag(eig2))
  assert got_diag == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_singular_covariances_stay_finite_and_correct():
  # Fewer examples than dimensions: rank-deficient covariances (the pytorch-fid offset case).
  rng = np.random.default_rng(3)
  s1 = metrics.feature_statistics(rng.standard_normal((5, 12)))
  s2 = metrics.feature_statistics(rng.standard_normal((6, 12)) + 1.0)
  fid = metrics.frechet_distance(*s1, *s2)
  assert np.isfinite(fid)
  assert fid == pytest.approx(_eig_frechet(*s1, *s2), rel=1e-5)


def test_frechet_distance_methods_agree_with_pytorch_fid_route():
  rng = np.random.default_rng(4)
  s1 = metrics.feature_statistics(rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20)))
  s2 = metrics.feature_statistics(rng.standard_normal((200, 20)) + 0.5)
  fid = metrics.frechet_distance(*s1, *s2)
  assert fid == pytest.approx(metrics.frechet_distance(*s1, *s2, method='sqrtm'), rel=1e-10)
  with pytest.raises(ConfigError, match=r"'cholesky'; valid: \['eigh', 'sqrtm'\]"):
    metrics.frechet_distance(*s1, *s2, method='cholesky')


def test_frechet_distance_rejects_bad_input():
  eye = np.eye(3)
  with pytest.raises(DataError, match='sigma1 has the eigenvalue -1 .*positive semi-definite'):
    metrics.frechet_distance(np.zeros(3), -eye, np.zeros(3), eye)
  with pytest.raises(DataError, match='imaginary'):     # pytorch-fid's route: sqrt(-I) = iI
    metrics.frechet_distance(np.zeros(3), -eye, np.zeros(3), eye, method='sqrtm')
  with pytest.raises(DataError, match=r'sigma2 has shape \(2, 2\)'):
    metrics.frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(2))
  with pytest.raises(DataError, match='non-finite'):
    metrics.frechet_distance(np.array([0, np.nan, 0]), eye, np.zeros(3), eye)
  with pytest.raises(DataError, match='1-D'):
    metrics.frechet_distance(np.zeros((3, 1)), eye, np.zeros(3), eye)
  with pytest.raises(DataError, match='at least 2 rows'):
    metrics.feature_statistics(np.zeros((1, 4)))


def _population_mmd2_and_v_bias(points_p, points_q, m):
  """Exact MMD^2 between uniform distributions on two point sets, and E[V-statistic] - MMD^2."""
  k = metrics.polynomial_kernel
  k_pp, k_qq, k_pq = k(points_p, points_p), k(points_q, points_q), k(points_p, points_q)
  mmd2 = k_pp.mean() + k_qq.mean() - 2 * k_pq.mean()
  v_bias = (np.diag(k_pp).mean() - k_pp.mean() + np.diag(k_qq).mean() - k_qq.mean()) / m
  return mmd2, v_bias


def test_kid_is_unbiased_for_the_population_mmd2():
  rng = np.random.default_rng(4)
  d, m, draws = 4, 30, 400
  points_p = rng.standard_normal((20, d))
  points_q = 0.8 * rng.standard_normal((20, d)) + 0.3
  pop, v_bias = _population_mmd2_and_v_bias(points_p, points_q, m)
  values = np.array([
      metrics.kid(points_p[rng.integers(0, 20, m)], points_q[rng.integers(0, 20, m)],
                  num_subsets=2, subset_size=m)[0]
      for _ in range(draws)])
  std_error = values.std(ddof=1) / np.sqrt(draws)
  assert abs(values.mean() - pop) < 4 * std_error
  # The test has the power to see the biased (V-statistic) estimator's offset.
  assert abs(v_bias) > 8 * std_error


def test_kid_with_full_subsets_equals_the_full_sample_estimate_and_validates():
  rng = np.random.default_rng(5)
  a, b = rng.standard_normal((25, 3)), rng.standard_normal((25, 3)) + 0.5
  mean, std_error = metrics.kid(a, b, num_subsets=3, subset_size=25)
  assert mean == pytest.approx(metrics.mmd2_unbiased(a, b), rel=1e-12)   # U-stat: order-free
  assert std_error == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(DataError, match=r'subset_size=30 must be in \[2, 25\]'):
    metrics.kid(a, b, num_subsets=3, subset_size=30)
  with pytest.raises(DataError, match='different dims'):
    metrics.kid(a, b[:, :2], num_subsets=3, subset_size=10)


def test_inception_score_closed_forms_and_scipy_reference():
  n, k = 200, 10
  mean, std = metrics.inception_score(np.zeros((n, k)))
  assert (mean, std) == (pytest.approx(1.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
  # Each split of 20 holds each of k classes twice, each predicted with certainty: IS = k.
  one_hot = 1e3 * np.eye(k)[np.arange(n) % k]
  mean, std = metrics.inception_score(one_hot, splits=10)
  assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
  logits = np.random.default_rng(6).standard_normal((n, k)) * 2
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  split_scores = [np.exp(np.mean([stats.entropy(pi, part.mean(0)) for pi in part]))
                  for part in np.split(p, 4)]
  mean, std = metrics.inception_score(logits, splits=4)
  assert mean == pytest.approx(np.mean(split_scores), rel=1e-10)
  assert std == pytest.approx(np.std(split_scores), rel=1e-8)
  with pytest.raises(DataError, match='splits=300'):
    metrics.inception_score(logits, splits=300)


def _torch_fidelity_is(logits, splits):
  """torch-fidelity's isc_features_to_metric (shuffle=True, rng_seed=2020) in float64 numpy."""
  n = len(logits)
  logits = logits[np.random.RandomState(2020).permutation(n)]
  p, log_p = scipy.special.softmax(logits, 1), scipy.special.log_softmax(logits, 1)
  scores = []
  for i in range(splits):
    chunk = slice(i * n // splits, (i + 1) * n // splits)
    q = p[chunk].mean(0, keepdims=True)
    scores.append(np.exp((p[chunk] * (log_p[chunk] - np.log(q))).sum(1).mean()))
  return np.mean(scores), np.std(scores)


def test_inception_score_split_rules():
  logits = np.random.default_rng(9).normal(0, 3, (25, 7))   # 25 = 10 splits of 2 or 3
  got = metrics.inception_score(logits, splits=10, split_rule='torch_fidelity')
  np.testing.assert_allclose(got, _torch_fidelity_is(logits, 10), rtol=1e-12)
  assert abs(metrics.inception_score(logits, splits=10)[0] - got[0]) > 1e-3
  # One split (the paper's protocol: all samples at once): the order cannot matter.
  np.testing.assert_allclose(metrics.inception_score(logits, splits=1, split_rule='torch_fidelity'),
                             metrics.inception_score(logits, splits=1), rtol=1e-12)
  with pytest.raises(ConfigError, match="split rule 'random'"):
    metrics.inception_score(logits, split_rule='random')
