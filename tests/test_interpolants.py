"""Rectified flow and EDM's sigma process against closed form, Monte Carlo and exact mixture scores.

Samples are judged by ``mixture_fit`` as in test_sampling.py: z <= 4 is within the noise of as
many exact samples. EDM uses sigma_max = 10 in the samplers (about the mixture's diameter, as
VE's sigma_max = 3 there) and 50 for the likelihood, where its prior must match p_T closely.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import base, default_toy
from score_sde import likelihood, sampling, sde_lib
from score_sde.datasets import toy
from score_sde.errors import ConfigError
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()
PROCESSES = {
    'rf': sde_lib.RectifiedFlow(t_max=0.99),
    'edm': sde_lib.EDMSDE(sigma_min=0.002, sigma_max=10.0, rho=7.0),
}
T_GRID = np.array([1e-3, 0.1, 0.37, 0.5, 0.9, 0.99])


def _closed_form(name, t):
  """(m, s, f, g) in float64, written out independently of sde_lib."""
  if name == 'rf':
    return 1 - t, t, -1 / (1 - t), np.sqrt(2 * t / (1 - t))
  a, b, rho = 0.002**(1 / 7), 10.0**(1 / 7), 7.0
  sigma = (a + t * (b - a))**rho
  dsigma = rho * (b - a) * (a + t * (b - a))**(rho - 1)
  return np.ones_like(t), sigma, np.zeros_like(t), np.sqrt(2 * sigma * dsigma)


def _coeffs(sde, t):
  t = jnp.asarray(t, jnp.float32)
  mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
  drift, g = sde.sde(jnp.ones((t.shape[0], 1)), t)
  return [np.asarray(v, np.float64) for v in (mean[:, 0], std, drift[:, 0], g)]


@pytest.mark.parametrize('name', sorted(PROCESSES))
def test_marginal_drift_diffusion_closed_form(name):
  for got, want in zip(_coeffs(PROCESSES[name], T_GRID), _closed_form(name, T_GRID)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize('name', sorted(PROCESSES))
def test_marginals_solve_the_moment_odes(name):
  """f = d log m / dt and g^2 = d s^2 / dt - 2 f s^2, by autodiff of the marginal."""
  sde = PROCESSES[name]
  t = jnp.asarray(T_GRID, jnp.float32)
  m_and_var = lambda t: (sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)[0][:, 0],
                         sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)[1]**2)
  (m, var), (dm, dvar) = jax.jvp(m_and_var, (t,), (jnp.ones_like(t),))
  _, _, f, g = _coeffs(sde, T_GRID)
  np.testing.assert_allclose(dm, f * m, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dvar, 2 * f * var + g**2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', sorted(PROCESSES))
def test_forward_sde_monte_carlo_matches_marginal(name):
  """Euler–Maruyama on the forward SDE from x(0) = 0.7 (10,000 paths, 1,000 steps)."""
  sde = PROCESSES[name]
  n, steps = 10000, 1000
  dt = sde.T / steps

  def step(x, inputs):
    t, key = inputs
    drift, g = sde.sde(x, jnp.full((n,), t))
    return x + drift * dt + g[:, None] * math.sqrt(dt) * jax.random.normal(key, x.shape), None

  x0 = jnp.full((n, 1), 0.7)
  times, keys = jnp.arange(steps) * dt, jax.random.split(jax.random.PRNGKey(0), steps)
  x_half, _ = jax.lax.scan(step, x0, (times[:steps // 2], keys[:steps // 2]))
  x_end, _ = jax.lax.scan(step, x_half, (times[steps // 2:], keys[steps // 2:]))
  for t, x in [(sde.T / 2, x_half), (sde.T, x_end)]:
    mean, std = (float(np.asarray(v).reshape(-1)[0])
                 for v in sde.marginal_prob(x0[:1], jnp.array([t])))
    assert abs(float(x.mean()) - mean) < 4 * std / math.sqrt(n) + 0.01 * std, (t, x.mean(), mean)
    assert abs(float(x.std()) / std - 1) < 0.03, (t, float(x.std()), std)


@pytest.mark.parametrize('name', sorted(PROCESSES))
def test_discrete_chain_is_exact_at_every_level(name):
  """The chain of ``discretize`` (exact Gaussian transitions) has the process's marginals."""
  sde = dataclasses.replace(PROCESSES[name], N=50)
  levels = (jnp.arange(sde.N) + 1) * sde.T / sde.N

  def step(carry, t):
    mean, var = carry
    f, G = sde.discretize(jnp.ones((1, 1)), t[None])
    a = 1.0 + f[0, 0]
    return (a * mean, a**2 * var + G[0]**2), (a * mean, a**2 * var + G[0]**2)
  _, (means, variances) = jax.lax.scan(step, (jnp.float32(1.0), jnp.float32(0.0)), levels)
  m, s = sde.marginal_prob(jnp.ones((sde.N, 1)), levels)
  np.testing.assert_allclose(means, m[:, 0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.sqrt(variances), s, rtol=1e-3)


@pytest.mark.parametrize('name', sorted(PROCESSES))
def test_prior(name):
  sde = PROCESSES[name]
  scale = float(_coeffs(sde, np.array([sde.T]))[1][0])
  z = sde.prior_sampling(jax.random.PRNGKey(1), (4000, 3))
  assert abs(float(z.std()) / scale - 1) < 0.03
  np.testing.assert_allclose(sde.prior_logp(z[:5]),
                             stats.norm.logpdf(np.asarray(z[:5]), scale=scale).sum(1), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Samplers and likelihood driven by the exact Gaussian-mixture score.
# ---------------------------------------------------------------------------------------------

def _sample(sde, n=2000, **sampling_fields):
  config = default_toy.get_config()
  config.sampling.num_steps = None
  for key, value in sampling_fields.items():
    setattr(config.sampling, key, value)
  sampler = sampling.get_sampler(config, sde, (n, 2))
  samples, nfe = jax.jit(lambda rng: sampler(rng, GMM.score_fn(sde)))(jax.random.PRNGKey(0))
  return np.asarray(samples), int(nfe)


# The reverse SDE (Euler–Maruyama) and the probability-flow ODE (by EDM's Heun and DPM-Solver++,
# which step it in sigma = s / m and in the logSNR; the adaptive ODE solver is the likelihood's).
@pytest.mark.parametrize('name,fields,expected_nfe', [
    ('rf', dict(method='pc', predictor='euler_maruyama', corrector='none', num_steps=200), 200),
    ('edm', dict(method='pc', predictor='euler_maruyama', corrector='none', num_steps=200), 200),
    ('rf', dict(method='heun', num_steps=18), 35),                  # sigma = t / (1 - t)
    ('edm', dict(method='heun', num_steps=18), 35),
    ('rf', dict(method='dpm_solver', order=3, num_steps=20), 20),   # logSNR grid: m != 1
])
def test_samplers_reproduce_the_mixture(name, fields, expected_nfe):
  samples, nfe = _sample(PROCESSES[name], **fields)
  assert nfe == expected_nfe
  fit = mixture_fit(samples, GMM)
  assert fit['z'] <= 4.0, fit


@pytest.mark.parametrize('sde', [sde_lib.RectifiedFlow(t_max=0.99),
                                 sde_lib.EDMSDE(sigma_max=50.0)], ids=['rf', 'edm'])
def test_probability_flow_likelihood_is_the_exact_log_density(sde):
  eps = 1e-5
  fn = likelihood.get_likelihood_fn(sde, hutchinson_type='none', eps=eps)
  x = GMM.sample(jax.random.PRNGKey(3), 64)
  logp, _, _ = jax.jit(lambda rng, x: fn(rng, GMM.score_fn(sde), x))(jax.random.PRNGKey(1), x)
  err = np.asarray(logp - GMM.log_prob(x, jnp.full((64,), eps), sde))
  assert np.max(np.abs(err)) < 0.01, err


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('t_max', [1.0, 1.5, 0.0])
def test_rectified_flow_needs_t_max_below_one(t_max):
  with pytest.raises(ConfigError, match=r't_max must lie in \(0, 1\)'):
    sde_lib.RectifiedFlow(t_max=t_max)


def test_bad_edm_settings_and_unknown_process_names():
  with pytest.raises(ConfigError, match='sigma_min < sigma_max'):
    sde_lib.EDMSDE(sigma_min=1.0, sigma_max=0.5)
  with pytest.raises(ConfigError, match='rho > 0'):
    sde_lib.EDMSDE(rho=0.0)
  config = base.get_base_config()
  config.training.sde = 'flow'
  with pytest.raises(ConfigError, match="valid: .*'edm'.*'rectified_flow'"):
    sde_lib.get_sde(config)
  config.training.sde, config.model.t_max = 'rectified_flow', 1.0
  with pytest.raises(ConfigError, match='t_max'):
    sde_lib.get_sde(config)


def test_families_spec_bundles_each_familys_settings():
  """configs/experiments/sde_families_toy.py: one variant per family with its own settings."""
  from configs.experiments import sde_families_toy
  from score_sde import experiments
  spec = sde_families_toy.get_config()
  spec.samplers = {'pc_em': spec.samplers.pc_em.to_dict()}
  variants, cells = experiments.plan(spec)
  by_family = {dict(v.values)['family']: v.config for v in variants}
  assert sorted(by_family) == ['edm', 'rf', 'subvp', 've', 'vp'] and len(cells) == 10
  assert by_family['rf'].training.objective == 'velocity'
  assert by_family['edm'].model.precond == 'edm' and by_family['vp'].model.precond == 'paper'
  spec.train_axes.family = [{'training.sde': 'vpsde'}]
  with pytest.raises(ConfigError, match="needs a 'name'"):
    experiments.plan(spec)
