"""Toy distributions and the Gaussian mixture's exact marginal score and log-density."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from configs import default_toy
from score_sde import datasets, sde_lib
from score_sde.datasets import toy

SDES = [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE(sigma_max=3.0),
        sde_lib.VPSDE(beta_schedule='cosine')]


@pytest.mark.parametrize('name', sorted(toy.TOY_DISTRIBUTIONS))
def test_toy_samplers_shapes_and_ranges(name):
  x = toy.get_toy_sampler(name)(jax.random.PRNGKey(0), 1000)
  assert x.shape == (1000, 2) and x.dtype == jnp.float32
  scale = 1.0 if name == 'gaussian_mixture' else toy.SHAPE_SCALE
  assert np.all(np.abs(np.asarray(x)) < 1.6 * scale)
  assert 0.2 * scale < float(jnp.std(x)) < 1.0 * scale


@pytest.mark.parametrize('sde', SDES, ids=lambda s: type(s).__name__)
def test_mixture_log_prob_matches_scipy_at_every_t(sde):
  g = toy.GaussianMixture(means=np.array([[0.5, -0.2], [-0.4, 0.3]], np.float32),
                          stds=np.array([[0.1, 0.2], [0.15, 0.05]], np.float32),
                          weights=np.array([0.3, 0.7], np.float32))
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 2)) * 0.5
  t = jnp.array([0.0, 0.01, 0.1, 0.4, 0.8, 1.0])
  mean, std = sde.marginal_prob(jnp.ones((6, 1)), t)
  m, s = np.asarray(mean[:, 0], np.float64), np.asarray(std, np.float64)
  expected = []
  for i in range(6):
    dens = sum(w * stats.multivariate_normal(m[i] * mu, np.diag(m[i]**2 * sd**2 + s[i]**2)).pdf(
        np.asarray(x[i])) for w, mu, sd in zip(g.weights, g.means, g.stds))
    expected.append(np.log(dens))
  np.testing.assert_allclose(g.log_prob(x, t, sde), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('sde', SDES, ids=lambda s: type(s).__name__)
def test_mixture_score_is_the_gradient_of_its_log_density(sde):
  g = toy.gaussian_mixture(num_modes=5, std=0.1)
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 2))
  t = jnp.linspace(0.001, 1.0, 16)
  grad = jax.vmap(jax.grad(lambda xi, ti: g.log_prob(xi[None], ti[None], sde)[0]))(x, t)
  np.testing.assert_allclose(g.score(x, t, sde), grad, rtol=1e-4, atol=1e-4)


def test_mixture_samples_have_the_right_moments():
  g = toy.gaussian_mixture(num_modes=4, radius=1.0, std=0.1)
  x = np.asarray(g.sample(jax.random.PRNGKey(2), 40000))
  np.testing.assert_allclose(x.mean(0), 0.0, atol=0.02)
  np.testing.assert_allclose((x**2).mean(0), 0.5 + 0.01, rtol=0.03)   # radius^2 / 2 + std^2


def test_toy_iterator_is_deterministic_and_resumable():
  config = default_toy.get_config()
  config.training.batch_size = 16
  it = datasets.get_dataset(config, 'train', num_local_devices=8)
  first = [next(it)['image'] for _ in range(3)]
  assert first[0].shape == (8, 2, 2)
  state = it.get_state()
  expected = next(it)['image']
  again = datasets.get_dataset(config, 'train', num_local_devices=8)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)['image'], expected)
  other_split = next(datasets.get_dataset(config, 'test', num_local_devices=8, batch_size=16))['image']
  assert not np.allclose(other_split, first[0])


def test_unknown_toy_distribution():
  with pytest.raises(ValueError, match=r"Unknown toy distribution 'moons'; valid: \["):
    toy.get_toy_sampler('moons')
