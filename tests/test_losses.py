"""Denoising score matching against closed form, for Gaussian data N(mu, sigma0^2 I).

Under x(t) = m x(0) + s z the marginal is N(m mu, v I), v = m^2 sigma0^2 + s^2, with exact score
-(x - m mu) / v. Plugged into the loss, the residual s score + z = (m^2 sigma0^2 z - s m sigma0 e) / v
(e the data noise), whose per-dimension second moment is m^2 sigma0^2 / v: the loss's irreducible
value. Any other score adds E[lambda(t) ||score - exact||^2] on top.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import losses, sde_lib

MU, SIGMA0, D, B = 0.3, 0.5, 4, 40000
SDES = {'vp': sde_lib.VPSDE(), 'subvp': sde_lib.SubVPSDE(),
        've': sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0)}
EPS = 1e-5


def _gaussian_data(rng):
  return MU + SIGMA0 * jax.random.normal(rng, (B, D))


def _exact_score(sde):
  def score_fn(x, t):
    mean, std = sde.marginal_prob(jnp.full_like(x, MU), t)
    m = mean[:, :1] / MU
    return -(x - mean) / (m**2 * SIGMA0**2 + std[:, None]**2)
  return score_fn


def _expected_loss(sde, likelihood_weighting, eps=EPS):
  """The per-dimension minimum, averaged by quadrature over t ~ U(eps, T)."""
  t = np.linspace(eps, 1.0, 200001)
  mean, std = sde.marginal_prob(jnp.ones((len(t), 1)), jnp.asarray(t, jnp.float32))
  m, s = np.asarray(mean[:, 0], np.float64), np.asarray(std, np.float64)
  per_t = m**2 * SIGMA0**2 / (m**2 * SIGMA0**2 + s**2)
  if likelihood_weighting:
    g = np.asarray(sde.sde(jnp.ones((len(t), 1)), jnp.asarray(t, jnp.float32))[1], np.float64)
    per_t = per_t * g**2 / s**2
  return np.trapezoid(per_t, t) / (1.0 - eps)


def _check_mean(per_example, expected):
  se = float(per_example.std()) / math.sqrt(per_example.shape[0])
  assert abs(float(per_example.mean()) - expected) < 4 * se, (float(per_example.mean()), expected, se)


@pytest.mark.parametrize('name', list(SDES))
def test_dsm_loss_reaches_its_closed_form_minimum_with_the_exact_score(name):
  sde = SDES[name]
  x = _gaussian_data(jax.random.PRNGKey(0))
  per_example = losses.dsm_losses(jax.random.PRNGKey(1), _exact_score(sde), x, sde,
                                  reduce_mean=True, eps=EPS)
  assert per_example.shape == (B,)
  _check_mean(per_example, _expected_loss(sde, False))


# With g^2 weighting the VP integrand grows like 1/t near 0 (heavy-tailed Monte Carlo), so VP is
# checked from t = 0.05; VE's g^2 / s^2 is constant.
@pytest.mark.parametrize('name,eps', [('vp', 0.05), ('ve', EPS)])
def test_likelihood_weighted_loss_closed_form(name, eps):
  sde = SDES[name]
  x = _gaussian_data(jax.random.PRNGKey(2))
  per_example = losses.dsm_losses(jax.random.PRNGKey(3), _exact_score(sde), x, sde,
                                  reduce_mean=True, likelihood_weighting=True, eps=eps)
  _check_mean(per_example, _expected_loss(sde, True, eps))


@pytest.mark.parametrize('name', list(SDES))
def test_perturbed_score_costs_exactly_its_weighted_error(name):
  """score + c raises the (summed) loss by E[s^2] ||c||^2, the cross term vanishing in expectation."""
  sde = SDES[name]
  x = _gaussian_data(jax.random.PRNGKey(4))
  exact = _exact_score(sde)
  c = jnp.array([0.2, -0.1, 0.0, 0.3])
  kwargs = dict(reduce_mean=False, eps=EPS)
  rng = jax.random.PRNGKey(5)
  base = losses.dsm_losses(rng, exact, x, sde, **kwargs)
  worse = losses.dsm_losses(rng, lambda x, t: exact(x, t) + c, x, sde, **kwargs)
  assert float(worse.mean()) > float(base.mean())
  t = np.linspace(EPS, 1.0, 100001)
  s2 = np.asarray(sde.marginal_prob(jnp.ones((len(t), 1)), jnp.asarray(t, jnp.float32))[1],
                  np.float64)**2
  expected_gap = np.trapezoid(s2, t) / (1 - EPS) * float(jnp.sum(c**2))
  _check_mean(worse - base, expected_gap)


@pytest.mark.parametrize('name', ['vp', 've'])
def test_discrete_losses_are_ddpm_and_smld(name):
  """Discrete training: the DDPM / SMLD kernels, minimum m_i^2 sigma0^2 / v_i averaged over i."""
  sde = sde_lib.VPSDE(N=50) if name == 'vp' else sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0, N=50)
  if name == 'vp':
    m_i, s_i = np.sqrt(np.asarray(sde.alphas_cumprod)), np.sqrt(1 - np.asarray(sde.alphas_cumprod))
  else:
    m_i, s_i = np.ones(sde.N), np.asarray(sde.discrete_sigmas)

  def score_fn(x, i):   # discrete losses pass the step index i
    m, s = jnp.asarray(m_i, jnp.float32)[i][:, None], jnp.asarray(s_i, jnp.float32)[i][:, None]
    return -(x - m * MU) / (m**2 * SIGMA0**2 + s**2)

  x = _gaussian_data(jax.random.PRNGKey(6))
  per_example = losses.dsm_losses(jax.random.PRNGKey(7), score_fn, x, sde, continuous=False,
                                  reduce_mean=True)
  _check_mean(per_example, float(np.mean(m_i**2 * SIGMA0**2 / (m_i**2 * SIGMA0**2 + s_i**2))))


def test_discrete_training_needs_a_discrete_chain():
  with pytest.raises(ValueError, match='continuous=True'):
    losses.dsm_losses(jax.random.PRNGKey(0), lambda x, t: x, jnp.ones((2, 2)), sde_lib.SubVPSDE(),
                      continuous=False)


def test_per_example_noise_does_not_depend_on_how_the_batch_is_split():
  x = jnp.arange(16.0).reshape(8, 2)
  sde = SDES['vp']
  score_fn = lambda x, t: -x * t[:, None]
  whole = losses.dsm_losses(jax.random.PRNGKey(0), score_fn, x, sde)
  halves = [losses.dsm_losses(jax.random.PRNGKey(0), score_fn, x[k:k + 4], sde, index_offset=k)
            for k in (0, 4)]
  np.testing.assert_allclose(whole, jnp.concatenate(halves), rtol=1e-6)
