"""Likelihoods against closed form: Gaussian-mixture log-densities at t = eps, Gaussian images.

The exact score of the data's marginal p_t is available in closed form (``toy.GaussianMixture``
and diagonal Gaussians), so the only errors are the ODE solver's and the prior mismatch
p_T != prior, which the SDE parameters below make negligible (VP/sub-VP: m(1) ~ 0.007; VE:
sigma_max = 50 against a mixture of radius 0.8).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import base
from score_sde import datasets, likelihood, sde_lib
from score_sde.datasets import toy

EPS = 1e-5
MIXTURE = toy.gaussian_mixture()          # 8 modes on a circle of radius 0.8, std 0.08
SDES = {
    'vp': sde_lib.VPSDE(),
    'subvp': sde_lib.SubVPSDE(),
    've': sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0),
}


@functools.cache
def _jitted(sde_name: str, hutchinson_type: str):
  """A compiled likelihood of the mixture for one SDE and estimator (shared between tests)."""
  sde = SDES[sde_name]
  fn = likelihood.get_likelihood_fn(sde, hutchinson_type=hutchinson_type, eps=EPS)
  return jax.jit(lambda rng, x: fn(rng, MIXTURE.score_fn(sde), x))


def _mixture_data(n, seed=0):
  return MIXTURE.sample(jax.random.PRNGKey(seed), n)


def _exact_logp_eps(x, sde):
  return MIXTURE.log_prob(x, jnp.full((x.shape[0],), EPS), sde)


@pytest.mark.parametrize('sde_name', sorted(SDES))
def test_exact_trace_matches_mixture_log_density(sde_name):
  sde = SDES[sde_name]
  x = _mixture_data(64)
  logp, z, nfe = _jitted(sde_name, 'none')(jax.random.PRNGKey(1), x)
  err = np.asarray(logp - _exact_logp_eps(x, sde))
  assert logp.shape == (64,) and z.shape == x.shape
  assert np.max(np.abs(err)) < 0.01, err
  # The end point is distributed as the prior: its log-density under p_T and the prior agree.
  p_T = MIXTURE.log_prob(z, jnp.full((64,), sde.T), sde)
  assert np.max(np.abs(np.asarray(p_T - sde.prior_logp(z)))) < 1e-3
  assert 10 < int(nfe) < 2000


@pytest.mark.parametrize('hutchinson_type', ['rademacher', 'gaussian'])
def test_hutchinson_estimate_is_unbiased(hutchinson_type):
  sde = SDES['vp']
  x = _mixture_data(384, seed=2)
  logp, _, _ = _jitted('vp', hutchinson_type)(jax.random.PRNGKey(3), x)
  err = np.asarray(logp - _exact_logp_eps(x, sde))
  std_err = err.std(ddof=1) / math.sqrt(err.size)
  assert err.std() > 1e-3          # a real stochastic estimate, not the exact trace
  assert abs(err.mean()) < 3 * std_err, (err.mean(), std_err)


def test_nfe_counts_every_score_evaluation():
  calls = []
  sde = SDES['vp']

  def counting_score(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return MIXTURE.score(x, t, sde)

  fn = likelihood.get_likelihood_fn(sde, hutchinson_type='rademacher', rtol=1e-3, atol=1e-3)
  _, _, nfe = jax.jit(lambda rng, x: fn(rng, counting_score, x))(
      jax.random.PRNGKey(0), _mixture_data(8))
  jax.effects_barrier()
  assert int(nfe) == len(calls) > 0


def test_vmap_over_independent_batches_matches_separate_calls():
  fn = _jitted('vp', 'rademacher')
  x = _mixture_data(2 * 384, seed=4).reshape(2, 384, 2)   # the shape compiled above
  rngs = jax.random.split(jax.random.PRNGKey(5), 2)
  logp_v, z_v, nfe_v = jax.vmap(fn)(rngs, x)
  for i in range(2):
    logp, z, nfe = fn(rngs[i], x[i])
    np.testing.assert_allclose(logp_v[i], logp, atol=1e-4)
    np.testing.assert_allclose(z_v[i], z, atol=1e-4)
    assert int(nfe_v[i]) == int(nfe)


# ---------------------------------------------------------------------------------------------
# Bits per dimension.
# ---------------------------------------------------------------------------------------------

def _inverse_scaler(centered: bool):
  config = base.get_base_config()
  config.data.centered = centered
  return datasets.get_data_inverse_scaler(config), datasets.get_data_scaler(config)


@pytest.mark.parametrize('centered,offset', [(False, 8.0), (True, 7.0)])
def test_bpd_offset(centered, offset):
  inverse_scaler, _ = _inverse_scaler(centered)
  assert likelihood.bpd_offset(inverse_scaler) == pytest.approx(offset)


@pytest.mark.parametrize('centered', [False, True])
def test_uniform_model_has_eight_bits_per_dim(centered):
  """The uniform density on the data range codes 256 levels in exactly 8 bits, in any scaling."""
  inverse_scaler, _ = _inverse_scaler(centered)
  shape = (4, 4, 3)
  width = 2.0 if centered else 1.0
  logp = jnp.full((5,), -math.prod(shape) * math.log(width))
  np.testing.assert_allclose(likelihood.bits_per_dim(logp, shape, inverse_scaler), 8.0, atol=1e-6)


def test_bpd_rejects_non_affine_scaler():
  with pytest.raises(ValueError, match='affine'):
    likelihood.bpd_offset(lambda x: x**2 + 0.5)


# VE's prior N(0, sigma_max^2) misses p_T's mean mu_x: log p_T(z) - prior_logp(z) has std
# ~ 2 |mu_x| / sigma_max nats, 0.07 at sigma_max = 50 for these images; 500 makes it negligible.
IMAGE_SDES = {'vp': sde_lib.VPSDE(), 've': sde_lib.VESDE(sigma_min=0.01, sigma_max=500.0)}


@pytest.mark.parametrize('sde_name,centered', [('vp', True), ('ve', False)])
def test_gaussian_images_bits_per_dim_match_closed_form(sde_name, centered):
  """8-bit images whose dequantized values y in [0, 1] are N(mu, diag(s^2)) draws.

  The exact score in the model's space x = scaler(y) at time t is that of
  N(m(t) mu_x, m(t)^2 s_x^2 + std(t)^2), mu_x = scaler(mu), s_x = slope s. Its bits/dim must equal
  -log2 p(y) / D + 8 with p computed by scipy in [0, 1] space: the density of
  y = inverse_scaler(x(eps)), N(inverse_scaler(m mu_x), a^2 (m^2 s_x^2 + std^2)) with a = dy/dx
  (VE's std(eps) ~ sigma_min is not negligible next to s). For a diagonal Jacobian the
  Rademacher estimate is exact, so this holds per example.
  """
  sde = IMAGE_SDES[sde_name]
  inverse_scaler, scaler = _inverse_scaler(centered)
  shape, batch = (4, 4, 3), 16
  rng = np.random.default_rng(0)
  mu = rng.uniform(0.3, 0.7, shape).astype(np.float32)
  s = rng.uniform(0.05, 0.15, shape).astype(np.float32)
  levels = np.clip(np.floor((mu + s * rng.standard_normal((batch,) + shape)) * 256), 0, 255)
  y = ((levels + rng.uniform(size=levels.shape)) / 256).astype(np.float32)   # dequantized
  slope = 1.0 / float(jax.grad(inverse_scaler)(0.0))
  mu_x, s_x = jnp.asarray(scaler(mu)), jnp.asarray(slope * s)

  def score_fn(x, t):
    m, std = sde.marginal_prob(jnp.ones((t.shape[0],) + shape), t)
    var = m**2 * s_x**2 + sde_lib.batch_mul(std**2, jnp.ones_like(x))
    return -(x - m * mu_x) / var

  fn = likelihood.get_likelihood_fn(sde, hutchinson_type='rademacher', eps=EPS)
  logp, _, _ = jax.jit(lambda r, x: fn(r, score_fn, x))(jax.random.PRNGKey(0), scaler(y))
  bpd = likelihood.bits_per_dim(logp, shape, inverse_scaler)
  m, std = (float(np.asarray(v).reshape(-1)[0])
            for v in sde.marginal_prob(jnp.ones((1, 1)), jnp.full((1,), EPS)))
  mean_y = np.asarray(inverse_scaler(m * mu_x))
  std_y = np.sqrt(m**2 * np.asarray(s_x)**2 + std**2) / slope
  nll = -stats.norm.logpdf(y, mean_y, std_y).reshape(batch, -1).sum(-1)
  closed = nll / (y[0].size * math.log(2)) + 8
  np.testing.assert_allclose(bpd, closed, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------

def test_unknown_hutchinson_type_lists_valid_names():
  with pytest.raises(ValueError, match="'gaussian', 'none', 'rademacher'"):
    likelihood.get_likelihood_fn(SDES['vp'], hutchinson_type='skilling')


def test_paper_spelling_is_accepted():
  likelihood.get_likelihood_fn(SDES['vp'], hutchinson_type='Rademacher')


@pytest.mark.parametrize('kwargs', [dict(eps=0.0), dict(eps=1.5), dict(rtol=0.0),
                                    dict(solver='rk4')])
def test_bad_settings_raise(kwargs):
  with pytest.raises(ValueError):
    likelihood.get_likelihood_fn(SDES['vp'], **kwargs)


def test_nan_data_raises_eagerly_and_under_jit():
  x = _mixture_data(4).at[1, 0].set(jnp.nan)
  score_fn = MIXTURE.score_fn(SDES['vp'])
  fn = likelihood.get_likelihood_fn(SDES['vp'], hutchinson_type='rademacher', rtol=1e-2, atol=1e-2)
  with pytest.raises(ValueError, match='NaN'):
    fn(jax.random.PRNGKey(0), score_fn, x)
  with pytest.raises(Exception, match='NaN'):
    jax.block_until_ready(jax.jit(lambda r, x: fn(r, score_fn, x))(jax.random.PRNGKey(0), x))


@pytest.mark.parametrize('x,match', [(jnp.zeros((3,)), 'batch'),
                                     (jnp.zeros((3, 2), jnp.int32), 'floating'),
                                     (jnp.zeros((3, 5)), 'shape')])
def test_wrong_input_shapes_raise(x, match):
  fn = likelihood.get_likelihood_fn(SDES['vp'])
  with pytest.raises(ValueError, match=match):
    fn(jax.random.PRNGKey(0), MIXTURE.score_fn(SDES['vp']), x)
