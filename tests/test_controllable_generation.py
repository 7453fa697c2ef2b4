"""Inpainting and colorization through the PC samplers, on Gaussian data with exact scores:
observed values kept exactly, the filled-in part distributed as the Gaussian conditional."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default_toy
from score_sde import sde_lib
from score_sde.sampling import controllable_generation as controllable
from score_sde.errors import ConfigError, DataError

N = 2000   # samples


def gaussian_score_fn(sde, mu, cov):
  """Exact score of p_t for x(0) ~ N(mu, cov) (x flattened per example): p_t is
  N(m mu, m^2 cov + s^2 I), so with cov = Q diag(lam) Q^T,
  score = -Q diag(1 / (m^2 lam + s^2)) Q^T (x - m mu)."""
  lam, q = np.linalg.eigh(np.asarray(cov, np.float64))
  lam, q, mu = (jnp.asarray(a, jnp.float32) for a in (lam, q, mu))

  def score_fn(x, t):
    m, s = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    m = m[:, 0]
    flat = (x.reshape(x.shape[0], -1) - m[:, None] * mu) @ q
    flat = flat / (m[:, None]**2 * lam + s[:, None]**2)
    return -(flat @ q.T).reshape(x.shape)
  return score_fn


def conditional(mu, cov, observed, y):
  """Mean and covariance of x_u | x_o = y_o for x ~ N(mu, cov)."""
  o, u = observed, ~observed
  gain = cov[np.ix_(u, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
  return mu[u] + gain @ (y[o] - mu[o]), cov[np.ix_(u, u)] - gain @ cov[np.ix_(o, u)]


# Observed block (2 dims) independent of the unknown block (3 correlated dims, non-zero means):
# the case where the paper's replacement method is exact (see sampling/controllable_generation.py).
MU = np.array([0.5, -0.3, 0.4, -0.6, 0.2])
COV = np.zeros((5, 5))
COV[:2, :2] = [[0.4, 0.2], [0.2, 0.3]]
COV[2:, 2:] = [[0.5, 0.3, -0.1], [0.3, 0.6, 0.2], [-0.1, 0.2, 0.4]]
OBSERVED = np.array([True, True, False, False, False])
SDES = {
    'vp': (sde_lib.VPSDE(N=200), dict(predictor='euler_maruyama', corrector='none')),
    'subvp': (sde_lib.SubVPSDE(N=200), dict(predictor='reverse_diffusion', corrector='langevin')),
    've': (sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=200),
           dict(predictor='reverse_diffusion', corrector='none')),
}


@pytest.mark.parametrize('name', sorted(SDES))
def test_inpainting_keeps_observations_and_matches_the_gaussian_conditional(name):
  sde, options = SDES[name]
  y = np.array([1.2, 0.7, 9.0, 9.0, 9.0], np.float32)          # unobserved values are ignored
  image = np.broadcast_to(y, (N, 5))
  inpaint = controllable.get_inpainter(sde, (N, 5), **options)
  x, _ = jax.jit(lambda rng: inpaint(rng, gaussian_score_fn(sde, MU, COV), image, OBSERVED))(
      jax.random.PRNGKey(0))
  x = np.asarray(x, np.float64)
  np.testing.assert_array_equal(x[:, OBSERVED], image[:, OBSERVED])
  mean, cov = conditional(MU, COV, OBSERVED, y)
  # Monte-Carlo sd of the means ~ 0.017, of the covariances < 0.02 for 2000 samples.
  np.testing.assert_allclose(x[:, ~OBSERVED].mean(0), mean, atol=0.05)
  np.testing.assert_allclose(np.cov(x[:, ~OBSERVED].T), cov, atol=0.06)


def test_colorization_keeps_grey_and_matches_the_conditional_chroma():
  """2x2 RGB images whose grey and chroma axes are independent Gaussians: the colors drawn
  for a grey image have exactly the grey image's channel mean and the chroma law."""
  sde = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=200)
  shape = (N, 2, 2, 3)
  basis = controllable.COLOR_BASIS
  # Per-pixel colour-basis covariance: grey variance 0.3, chroma covariance [[.2,.05],[.05,.1]].
  pixel = np.zeros((3, 3))
  pixel[0, 0], pixel[1:, 1:] = 0.3, [[0.2, 0.05], [0.05, 0.1]]
  rgb_cov = basis @ pixel @ basis.T
  cov = np.kron(np.eye(4), rgb_cov)
  mu = np.tile(basis @ np.array([0.9, 0.1, -0.2]), 4)
  grey = jnp.broadcast_to(jnp.array([[0.3, 0.8], [0.5, 0.1]])[None, ..., None], (N, 2, 2, 1))
  colorize = controllable.get_colorizer(sde, shape, predictor='reverse_diffusion')
  x, _ = jax.jit(lambda rng: colorize(rng, gaussian_score_fn(sde, mu, cov), grey))(
      jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.asarray(x).mean(-1), np.asarray(grey)[..., 0], atol=1e-5)
  chroma = np.einsum('bhwi,ij->bhwj', np.asarray(x, np.float64), basis)[..., 1:].reshape(N, -1, 2)
  for p in range(4):
    np.testing.assert_allclose(chroma[:, p].mean(0), [0.1, -0.2], atol=0.04)
    np.testing.assert_allclose(np.cov(chroma[:, p].T), pixel[1:, 1:], atol=0.03)


def test_bad_input_gives_clear_errors():
  sde = sde_lib.VESDE(N=10)
  inpaint = controllable.get_inpainter(sde, (4, 8, 8, 3))
  score = lambda x, t: -x
  image = jnp.zeros((4, 8, 8, 3))
  with pytest.raises(DataError, match=r'Mask of shape \(8, 7, 1\)'):
    inpaint(jax.random.PRNGKey(0), score, image, jnp.ones((8, 7, 1)))
  with pytest.raises(DataError, match=r'has shape \(4, 8, 8, 1\)'):
    inpaint(jax.random.PRNGKey(0), score, jnp.zeros((4, 8, 8, 1)), jnp.ones((8, 8, 1)))
  with pytest.raises(ConfigError, match='RGB'):
    controllable.get_colorizer(sde, (4, 8, 8, 1))
  with pytest.raises(DataError, match='Grey images'):
    controllable.get_colorizer(sde, (4, 8, 8, 3))(jax.random.PRNGKey(0), score,
                                                   jnp.zeros((4, 8, 4, 1)))
  config = default_toy.get_config()
  config.sampling.method = 'ode'
  with pytest.raises(ConfigError, match='sampling.method=pc'):
    controllable.pc_options(config)
