"""Toy-data metrics against float64 references and closed forms."""
from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from scipy import special, stats

from score_sde.datasets import toy
from score_sde.errors import ConfigError, DataError
from score_sde.evaluation import toy_metrics


def test_nll_is_the_float64_mixture_log_density():
  gmm = toy.gaussian_mixture()
  x = np.asarray(gmm.sample(jax.random.PRNGKey(0), 4000), np.float64)
  comp = np.stack([stats.multivariate_normal(m, np.diag(s**2)).logpdf(x)
                   for m, s in zip(gmm.means.astype(np.float64), gmm.stds.astype(np.float64))], 1)
  ref = -special.logsumexp(comp + np.log(gmm.weights.astype(np.float64)), axis=1)
  value, std_err = toy_metrics.nll(x, gmm)
  assert value == pytest.approx(ref.mean(), abs=1e-4)
  assert std_err == pytest.approx(ref.std(ddof=1) / math.sqrt(len(ref)), rel=1e-3)
  # Samples from the data itself: -log p averages to the entropy, here that of well-separated
  # isotropic modes, log 8 + log(2 pi e sigma^2) (the modes overlap negligibly).
  entropy = math.log(8) + math.log(2 * math.pi * math.e * 0.08**2)
  assert value == pytest.approx(entropy, abs=3 * std_err)
  # A sample far between the modes is (much) less likely than the data.
  assert toy_metrics.nll(np.zeros((4, 2)), gmm)[0] > value + 10


def test_sliced_w1_equals_scipy_per_projection_for_unequal_sizes():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(300, 2)), rng.normal(1.0, 2.0, size=(170, 2))
  key = jax.random.PRNGKey(3)
  pp, per_proj = toy_metrics.sliced_wasserstein_per_projection(
      np.float32(x), np.float32(y), key, num_projections=16, p=1.0)
  theta = np.asarray(jax.random.normal(key, (16, 2)), np.float64)
  theta /= np.linalg.norm(theta, axis=1, keepdims=True)
  ref = np.array([stats.wasserstein_distance(x @ t, y @ t) for t in theta])
  np.testing.assert_allclose(np.asarray(per_proj), ref, rtol=2e-4)
  assert toy_metrics.sliced_wasserstein(x, y, key, num_projections=16, p=1) == pytest.approx(
      ref.mean(), rel=2e-4)


def _whitened_normal(rng, n):
  """n standard normal points (n, 2) with sample mean exactly 0 and covariance exactly I, so
  only the shape of the empirical distribution, not its moments, differs from the Gaussian."""
  z = rng.normal(size=(n, 2))
  z -= z.mean(0)
  return z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T


def test_sliced_w2_between_gaussians_matches_closed_form():
  """Projected on theta, N(mu, S) is N(theta.mu, theta' S theta), and between 1-D Gaussians
  W2^2 = (m1 - m2)^2 + (s1 - s2)^2; SW2^2 is its average over the same projections."""
  mu1, mu2 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
  s1, s2 = np.diag([1.0, 0.25]), np.array([[2.0, 0.6], [0.6, 1.0]])
  n = 20000
  x = mu1 + _whitened_normal(np.random.default_rng(1), n) @ np.linalg.cholesky(s1).T
  y = mu2 + _whitened_normal(np.random.default_rng(2), n) @ np.linalg.cholesky(s2).T
  key = jax.random.PRNGKey(0)
  _, per_proj = toy_metrics.sliced_wasserstein_per_projection(
      np.float32(x), np.float32(y), key, num_projections=64, p=2.0)
  theta = np.asarray(jax.random.normal(key, (64, 2)), np.float64)
  theta /= np.linalg.norm(theta, axis=1, keepdims=True)
  sd1 = np.sqrt(np.einsum('li,ij,lj->l', theta, s1, theta))
  sd2 = np.sqrt(np.einsum('li,ij,lj->l', theta, s2, theta))
  exact = (theta @ (mu1 - mu2))**2 + (sd1 - sd2)**2
  np.testing.assert_allclose(np.asarray(per_proj), exact, atol=0.03)
  sw = toy_metrics.sliced_wasserstein(x, y, key, num_projections=64)
  assert sw == pytest.approx(math.sqrt(exact.mean()), rel=0.01)


def _population_mmd2(mu1, var1, mu2, var2, h):
  """MMD^2 of isotropic Gaussians N(mu, var I) in D dims under exp(-|x-y|^2 / (2 h^2)):
  E k(X, Y) = (h^2 / (h^2 + v1 + v2))^(D/2) exp(-|mu1 - mu2|^2 / (2 (h^2 + v1 + v2)))."""
  d = len(mu1)

  def ek(ma, va, mb, vb):
    s = h**2 + va + vb
    return (h**2 / s)**(d / 2) * math.exp(-np.sum((ma - mb)**2) / (2 * s))
  return ek(mu1, var1, mu1, var1) + ek(mu2, var2, mu2, var2) - 2 * ek(mu1, var1, mu2, var2)


def test_mmd_is_unbiased_with_an_honest_standard_error():
  h, n, draws = 0.8, 400, 60
  mu1, mu2 = np.zeros(2), np.array([0.4, 0.0])
  rng = np.random.default_rng(2)
  values, errors, nulls, null_errors = [], [], [], []
  for _ in range(draws):
    x = rng.normal(size=(n, 2))
    y = mu2 + math.sqrt(1.5) * rng.normal(size=(n + 100, 2))
    v, e = toy_metrics.mmd(x, y, h)
    values.append(v)
    errors.append(e)
    v0, e0 = toy_metrics.mmd(x, rng.normal(size=(n, 2)), h)
    nulls.append(v0)
    null_errors.append(e0)
  values, nulls = np.array(values), np.array(nulls)
  exact = _population_mmd2(mu1, 1.0, mu2, 1.5, h)
  assert values.mean() == pytest.approx(exact, abs=3 * values.std(ddof=1) / math.sqrt(draws))
  assert 0.7 < np.mean(errors) / values.std(ddof=1) < 1.4
  # Identical distributions: the unbiased estimate averages to 0 (within 4 standard errors of the
  # mean over draws: its null law is skewed); single draws lie within a few of their own
  # standard errors of 0, and are often negative.
  assert abs(nulls.mean()) < 4 * nulls.std(ddof=1) / math.sqrt(draws)
  assert np.mean(np.abs(nulls) < 3 * np.array(null_errors)) > 0.9
  assert (nulls < 0).any()


def test_mmd_matches_a_float64_brute_force_reference():
  rng = np.random.default_rng(3)
  x, y, h = rng.normal(size=(50, 2)), rng.normal(0.3, 1.0, size=(70, 2)), 0.5
  k = lambda a, b: np.exp(-((a[:, None] - b[None])**2).sum(-1) / (2 * h**2))
  kxx, kyy = k(x, x), k(y, y)
  ref = ((kxx.sum() - 50) / (50 * 49) + (kyy.sum() - 70) / (70 * 69) - 2 * k(x, y).mean())
  assert toy_metrics.mmd(x, y, h)[0] == pytest.approx(ref, abs=2e-6)


def test_compute_dispatches_and_rejects_bad_input():
  rng = jax.random.PRNGKey(0)
  data = np.asarray(toy.get_toy_sampler('spiral')(rng, 256))
  out = toy_metrics.compute(['nll', 'sliced_wasserstein', 'mmd'], data, data, 'spiral', rng)
  assert out['nll'] is None        # the spiral has no closed-form density
  assert out['sliced_wasserstein']['value'] == pytest.approx(0.0, abs=1e-6)
  with pytest.raises(ConfigError, match="'fid'.*valid"):
    toy_metrics.compute(['fid'], data, data, 'spiral', rng)
  with pytest.raises(DataError, match='shape'):
    toy_metrics.mmd(np.zeros((10,)), data, 0.1)
