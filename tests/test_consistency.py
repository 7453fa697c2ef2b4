"""Consistency-model pieces on Gaussian data, whose consistency function is known in closed form.

For data N(mu, c^2 I) the probability flow keeps (y - mu) / sqrt(c^2 + sigma^2) constant, so the
exact consistency function is f*(y, sigma) = mu + (y - mu) sqrt(c^2 + sigma_min^2) / sqrt(c^2 +
sigma^2). A score model whose f_theta equals f* has (near) zero distillation loss against the
exact teacher, and the 1-step sampler then draws the data (to the eps blur sigma_min).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import consistency, sde_lib
from score_sde.datasets import toy
from score_sde.sampling import schedules

MU, C = np.array([0.3, -0.3]), 0.1
GAUSSIAN = toy.GaussianMixture(MU[None], np.full((1, 2), C), np.array([1.0]))
VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0)
EPS = 1e-3
SIGMA_MIN = float(schedules.scaled_sigma(VE, np.array([EPS]))[0])


def _exact_student(sde):
  """A score_fn whose consistency function is exactly f* (solved from f = y - (1 - sigma_min /
  sigma) (y - D) for y - D, then the score -(m / s^2) (y - D))."""
  def score_fn(x, t):
    mean, s = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    m = mean[:, 0]
    sigma = s / m
    y = x / m[:, None]
    f_star = MU + (y - MU) * (jnp.sqrt(C**2 + SIGMA_MIN**2) / jnp.sqrt(C**2 + sigma**2))[:, None]
    jump = 1.0 - SIGMA_MIN / sigma
    at_min = jump <= 0.0   # sigma = sigma_min: f = y whatever D is
    residual = (y - f_star) / jnp.where(at_min, 1.0, jump)[:, None]
    return -(m / s**2)[:, None] * jnp.where(at_min[:, None], 0.0, residual)
  return score_fn


@pytest.mark.parametrize('levels', [
    {}, {'level_ratio': 4.0, 'teacher_substeps': 3, 'metric': 'l2'}], ids=['grid', 'ratio'])
def test_distillation_loss_vanishes_for_the_exact_consistency_function(levels):
  x = GAUSSIAN.sample(jax.random.PRNGKey(0), 256)
  kwargs = dict(num_levels=18, eps=EPS, teacher_score_fn=GAUSSIAN.score_fn(VE), **levels)
  losses = jax.jit(lambda score_fn: consistency.consistency_losses(
      jax.random.PRNGKey(1), score_fn, x, VE, **kwargs), static_argnums=0)
  exact, plain = losses(_exact_student(VE)), losses(GAUSSIAN.score_fn(VE))
  assert float(jnp.mean(exact)) < 0.02 * float(jnp.mean(plain)), (exact.mean(), plain.mean())


def test_one_and_two_step_sampling_of_the_exact_consistency_function():
  score_fn = _exact_student(VE)
  for times in ([VE.T], [VE.T, 0.3]):
    sample = jax.jit(lambda rng: consistency.multistep_sample(rng, score_fn, VE, (4000, 2),
                                                              times, EPS))
    x = np.asarray(sample(jax.random.PRNGKey(2)))
    np.testing.assert_allclose(x.mean(0), MU, atol=0.01)
    np.testing.assert_allclose(x.std(0), np.sqrt(C**2 + SIGMA_MIN**2), rtol=0.05)


def test_boundary_condition():
  x = jax.random.normal(jax.random.PRNGKey(3), (8, 2))
  t = jnp.full((8,), EPS)
  f = consistency.consistency_fn(lambda x, t: 100.0 * x, VE, x, t, SIGMA_MIN)
  np.testing.assert_allclose(f, x, rtol=1e-6)


def test_meanflow_target_matches_finite_differences():
  """d/dt u(x(t), r, t) along dx/dt = v, by jvp, against a central difference along the path."""
  w = jax.random.normal(jax.random.PRNGKey(4), (2, 2))
  u_fn = lambda x, r, t: jnp.tanh(x @ w) * (1 + t[:, None] ** 2) + jnp.sin(3 * r)[:, None] * x
  x = jax.random.normal(jax.random.PRNGKey(5), (6, 2))
  v = jax.random.normal(jax.random.PRNGKey(6), (6, 2))
  r, t = jnp.full((6,), 0.2), jnp.full((6,), 0.7)
  u, target = consistency.meanflow_target(u_fn, x, r, t, v)
  h = 1e-2
  du_dt = (u_fn(x + h * v, r, t + h) - u_fn(x - h * v, r, t - h)) / (2 * h)
  np.testing.assert_allclose(u, u_fn(x, r, t), rtol=1e-6)
  np.testing.assert_allclose(target, v - 0.5 * du_dt, rtol=2e-3, atol=2e-4)
