"""SDEs against closed form: marginals, drifts, diffusions, priors, discretizations, Monte Carlo."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_sde import sde_lib

ALL_SDES = {
    'vp': sde_lib.VPSDE(),
    'vp_cosine': sde_lib.VPSDE(beta_schedule='cosine'),
    'subvp': sde_lib.SubVPSDE(),
    'subvp_cosine': sde_lib.SubVPSDE(beta_schedule='cosine'),
    've': sde_lib.VESDE(),
}
T_GRID = np.array([1e-3, 0.1, 0.37, 0.5, 0.9, 1.0], np.float32)


def _mean_std(sde, t):
  mean, std = sde.marginal_prob(jnp.ones((len(t), 1)), jnp.asarray(t))
  return np.asarray(mean[:, 0]), np.asarray(std)


def test_vp_marginal_closed_form():
  b0, b1 = 0.1, 20.0
  t = T_GRID.astype(np.float64)
  log_m = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
  mean, std = _mean_std(sde_lib.VPSDE(beta_min=b0, beta_max=b1), T_GRID)
  np.testing.assert_allclose(mean, np.exp(log_m), rtol=1e-5)
  np.testing.assert_allclose(std, np.sqrt(1 - np.exp(2 * log_m)), rtol=1e-5)
  mean, std = _mean_std(sde_lib.SubVPSDE(beta_min=b0, beta_max=b1), T_GRID)
  np.testing.assert_allclose(mean, np.exp(log_m), rtol=1e-5)
  np.testing.assert_allclose(std, 1 - np.exp(2 * log_m), rtol=1e-5)


def test_ve_marginal_and_diffusion_closed_form():
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0)
  mean, std = _mean_std(sde, T_GRID)
  np.testing.assert_allclose(mean, 1.0)
  np.testing.assert_allclose(std, 0.01 * 5000.0**T_GRID.astype(np.float64), rtol=1e-5)
  drift, g = sde.sde(jnp.ones((len(T_GRID), 3)), jnp.asarray(T_GRID))
  np.testing.assert_allclose(drift, 0.0)
  np.testing.assert_allclose(g, std * np.sqrt(2 * np.log(5000.0)), rtol=1e-5)


def test_vp_drift_and_diffusion_closed_form():
  sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0)
  x = jnp.full((len(T_GRID), 2), 3.0)
  drift, g = sde.sde(x, jnp.asarray(T_GRID))
  beta = 0.1 + T_GRID * 19.9
  np.testing.assert_allclose(drift, np.broadcast_to(-0.5 * beta[:, None] * 3.0, (6, 2)), rtol=1e-5)
  np.testing.assert_allclose(g, np.sqrt(beta), rtol=1e-5)
  _, g_sub = sde_lib.SubVPSDE().sde(x, jnp.asarray(T_GRID))
  B = 0.1 * T_GRID + 0.5 * 19.9 * T_GRID**2
  np.testing.assert_allclose(g_sub, np.sqrt(beta * (1 - np.exp(-2 * B))), rtol=1e-4)


@pytest.mark.parametrize('name', list(ALL_SDES))
def test_marginal_solves_the_moment_odes(name):
  """For dx = f(t) x dt + g(t) dw: dm/dt = f m and d(s^2)/dt = 2 f s^2 + g^2 (Itô)."""
  sde = ALL_SDES[name]
  t = jnp.asarray(T_GRID[1:-1])
  f = lambda t: sde.sde(jnp.ones((t.shape[0], 1)), t)[0][:, 0]       # f(t) x at x = 1
  g = lambda t: sde.sde(jnp.ones((t.shape[0], 1)), t)[1]
  m = lambda t: sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)[0][:, 0]
  var = lambda t: sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)[1]**2
  dm = jax.jvp(m, (t,), (jnp.ones_like(t),))[1]
  dvar = jax.jvp(var, (t,), (jnp.ones_like(t),))[1]
  np.testing.assert_allclose(dm, f(t) * m(t), rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(dvar, 2 * f(t) * var(t) + g(t)**2, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize('name', ['vp', 'subvp', 've'])
def test_marginal_matches_monte_carlo_forward_simulation(name):
  """Euler–Maruyama simulation of the forward SDE from x(0) = 0.7 agrees with marginal_prob."""
  sde = ALL_SDES[name]
  n, steps = 20000, 1000
  dt = sde.T / steps
  x0 = jnp.full((n, 1), 0.7)

  def step(x, inputs):
    t, key = inputs
    drift, g = sde.sde(x, jnp.full((n,), t))
    return x + drift * dt + g[:, None] * math.sqrt(dt) * jax.random.normal(key, x.shape), None

  times = jnp.arange(steps) * dt
  half = steps // 2
  keys = jax.random.split(jax.random.PRNGKey(0), steps)
  x_half, _ = jax.lax.scan(step, x0, (times[:half], keys[:half]))
  x_end, _ = jax.lax.scan(step, x_half, (times[half:], keys[half:]))
  for t, x in [(0.5, x_half), (1.0, x_end)]:
    mean, std = sde.marginal_prob(x0[:1], jnp.array([t]))
    mean, std = float(mean[0, 0]), float(std[0])
    se = std / math.sqrt(n)
    assert abs(float(x.mean()) - mean) < 4 * se + 0.01 * std, (t, float(x.mean()), mean)
    assert abs(float(x.std()) / std - 1) < 0.03, (t, float(x.std()), std)


@pytest.mark.parametrize('name', list(ALL_SDES))
def test_prior_sampling_and_logp(name):
  sde = ALL_SDES[name]
  z = sde.prior_sampling(jax.random.PRNGKey(1), (4000, 3, 2))
  scale = getattr(sde, 'sigma_max', 1.0)
  assert abs(float(z.std()) / scale - 1) < 0.03
  np.testing.assert_allclose(sde.prior_logp(z[:5]),
                             stats.norm.logpdf(np.asarray(z[:5]), scale=scale).sum((1, 2)),
                             rtol=1e-5)


def test_vp_discretize_is_ddpm():
  sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000)
  betas = np.linspace(0.1 / 1000, 20.0 / 1000, 1000)
  i = np.array([0, 1, 500, 999])
  t = jnp.asarray(i / 999.0, jnp.float32)
  x = jnp.full((4, 2), 2.0)
  f, G = sde.discretize(x, t)
  np.testing.assert_allclose(f, np.broadcast_to((np.sqrt(1 - betas[i]) - 1)[:, None] * 2.0, (4, 2)),
                             rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(G, np.sqrt(betas[i]), rtol=1e-5)


def test_ve_discretize_is_smld():
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=10)
  sigmas = np.exp(np.linspace(np.log(0.01), np.log(50.0), 10))
  i = np.arange(10)
  f, G = sde.discretize(jnp.ones((10, 2)), jnp.asarray(i / 9.0, jnp.float32))
  np.testing.assert_allclose(f, 0.0)
  prev = np.concatenate([[0.0], sigmas[:-1]])
  np.testing.assert_allclose(G, np.sqrt(sigmas**2 - prev**2), rtol=1e-4)


@pytest.mark.parametrize('name', ['vp', 'vp_cosine', 'subvp', 'subvp_cosine', 've'])
def test_discrete_chain_reproduces_the_marginal(name):
  """Running x_i = x_{i-1} + f_i + G_i z over the whole chain gives m(1) and s(1) closely."""
  sde = ALL_SDES[name]
  t = jnp.arange(sde.N) / (sde.N - 1)
  # Mean and variance recursions of the chain for x_0 = 1 (deterministic, no sampling).
  def step(carry, t_i):
    mean, var = carry
    f, G = sde.discretize(jnp.ones((1, 1)), t_i[None])
    a = 1.0 + f[0, 0]                      # f is linear in x: x + f(x) = a x
    return (a * mean, a**2 * var + G[0]**2), None
  (mean, var), _ = jax.lax.scan(step, (jnp.float32(1.0), jnp.float32(0.0)), t)
  m1, s1 = sde.marginal_prob(jnp.ones((1, 1)), jnp.ones((1,)))
  np.testing.assert_allclose(float(mean), float(m1[0, 0]), rtol=0.05, atol=2e-3)
  np.testing.assert_allclose(math.sqrt(float(var)), float(s1[0]), rtol=0.02)


def test_cosine_schedule_is_finite_and_monotone():
  sde = sde_lib.VPSDE(beta_schedule='cosine')
  betas = np.asarray(sde.discrete_betas)
  assert np.all(np.isfinite(betas)) and np.all(betas > 0) and np.all(betas <= 0.999)
  assert np.all(np.diff(betas) >= -1e-7)
  _, std = _mean_std(sde, np.linspace(0, 1, 101, dtype=np.float32))
  assert np.all(np.diff(std) > 0) and std[-1] > 0.9999
  assert float(sde.beta(jnp.float32(1.0))) < 1000


@pytest.mark.parametrize('probability_flow', [False, True])
def test_reverse_sde_drift_and_diffusion(probability_flow):
  sde = sde_lib.VPSDE()
  score_fn = lambda x, t: -x * 2.0
  rsde = sde.reverse(score_fn, probability_flow=probability_flow)
  x, t = jnp.ones((3, 2)), jnp.array([0.2, 0.5, 0.9])
  f, g = sde.sde(x, t)
  drift, diffusion = rsde.sde(x, t)
  w = 0.5 if probability_flow else 1.0
  np.testing.assert_allclose(drift, f - (g**2)[:, None] * score_fn(x, t) * w, rtol=1e-6)
  np.testing.assert_allclose(diffusion, 0.0 if probability_flow else g)
  rf, rG = rsde.discretize(x, t)
  f_d, G_d = sde.discretize(x, t)
  np.testing.assert_allclose(rf, f_d - (G_d**2)[:, None] * score_fn(x, t) * w, rtol=1e-6)


def test_sde_jits_and_has_paper_defaults():
  sde = sde_lib.VPSDE()
  assert (sde.beta_min, sde.beta_max, sde.N, sde.T) == (0.1, 20.0, 1000, 1.0)
  ve = sde_lib.VESDE()
  assert (ve.sigma_min, ve.sigma_max, ve.N) == (0.01, 50.0, 1000)
  out = jax.jit(lambda x, t: sde.marginal_prob(x, t))(jnp.ones((2, 2)), jnp.ones((2,)))
  assert out[0].shape == (2, 2) and out[1].shape == (2,)


def test_bad_sde_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="valid: 'linear', 'cosine'"):
    sde_lib.VPSDE(beta_schedule='quadratic')
  with pytest.raises(ValueError, match='sigma_min < sigma_max'):
    sde_lib.VESDE(sigma_min=1.0, sigma_max=0.5)
  with pytest.raises(ValueError, match='N must be'):
    sde_lib.SubVPSDE(N=0)
