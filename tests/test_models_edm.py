"""EDM preconditioning: closed-form denoiser of Gaussian data, log-normal times, loss weight."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.tiny import ddpmpp as tiny_ddpmpp
from score_sde import losses, models, sde_lib
from score_sde.models import precond
from score_sde.models import utils as mutils


class ZeroNet(nn.Module):
  """F = 0 (with one unused parameter so the tree is not empty)."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    return 0.0 * self.param('w', nn.initializers.zeros, ()) * x


SDES = [sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
        sde_lib.SubVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
        sde_lib.VESDE(sigma_min=0.002, sigma_max=80.0, N=1000)]


@pytest.mark.parametrize('sde', SDES, ids=lambda s: type(s).__name__)
def test_zero_network_is_the_exact_score_of_gaussian_data(sde):
  """With F = 0, D = c_skip x~ is the optimal denoiser of x0 ~ N(0, sigma_data^2 I), so the score
  must be that of x(t) ~ N(0, (m^2 sigma_data^2 + s^2) I)."""
  sigma_data = 0.5
  model = precond.EDMPrecond(net=ZeroNet(), sigma_data=sigma_data)
  params = {'net': {'w': jnp.zeros(())}}
  score_fn = mutils.get_score_fn(sde, model, params)
  t = jnp.array([0.01, 0.3, 0.9])
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 4, 2))
  mean, std = sde.marginal_prob(jnp.ones((3, 1)), t)
  var = mean[:, 0]**2 * sigma_data**2 + std**2
  np.testing.assert_allclose(score_fn(x, t), -x / var[:, None, None, None], rtol=1e-4)


def test_sample_times_follow_the_log_normal():
  sde = SDES[2]
  u = (jnp.arange(4000) + 0.5) / 4000
  t = precond.sample_times(sde, u, eps=1e-5, P_mean=-1.2, P_std=1.2)
  log_sigma = np.log(np.asarray(sde.sigma_of_t(t)))
  inside = (log_sigma > np.log(0.0021)) & (log_sigma < np.log(79.0))
  assert inside.mean() > 0.99
  np.testing.assert_allclose(log_sigma.mean(), -1.2, atol=0.03)
  np.testing.assert_allclose(log_sigma.std(), 1.2, atol=0.05)
  # VP: the same bisection inverts sigma(t) = sqrt(exp(int beta) - 1).
  t_vp = precond.sample_times(SDES[0], jnp.array([0.5]), eps=1e-5)
  np.testing.assert_allclose(np.log(SDES[0].sigma_of_t(t_vp)), -1.2, atol=1e-4)


def test_loss_weight_and_coefficients():
  sde = SDES[2]
  t = precond.sample_times(sde, jnp.array([0.5]), eps=1e-5)
  sigma = float(sde.sigma_of_t(t)[0])
  np.testing.assert_allclose(precond.loss_weight(sde, t, 0.5), (sigma**2 + 0.25) / 0.25, rtol=1e-4)
  c_skip, c_out, c_in = precond.edm_coefficients(jnp.array([1e-4, 0.5, 1e3]), 0.5)
  np.testing.assert_allclose(c_skip, [1.0, 0.5, 0.25e-6], rtol=1e-3)
  # Unit variance in and out for x0 ~ N(0, sd^2): c_in^2 (sd^2 + sigma^2) = 1.
  np.testing.assert_allclose(c_in**2 * (0.25 + jnp.array([1e-8, 0.25, 1e6])), 1.0, rtol=1e-5)
  np.testing.assert_allclose(c_out[1], 0.5 * 0.5 / np.sqrt(0.5), rtol=1e-6)


def test_config_switch_and_loss_hook():
  config = tiny_ddpmpp.get_config()
  config.model.precond = 'edm'
  model = models.get_model(config)
  assert isinstance(model, precond.EDMPrecond) and model.embedding_type == 'positional'
  config.model.precond = 'karras'
  with pytest.raises(ValueError, match="valid: \\['paper', 'edm'\\]"):
    models.get_model(config)
  # The loss uses EDM's times and weights for an EDM model (cheap stand-in network).
  sde = SDES[2]
  model = precond.EDMPrecond(net=ZeroNet())
  loss_fn = losses.get_loss_fn(sde, model, train=False, reduce_mean=True)
  x = jnp.zeros((4, 2, 2, 1))
  _, per_example = loss_fn({'net': {'w': jnp.zeros(())}}, x, jax.random.PRNGKey(0), 0)
  # x0 = 0 and F = 0: s score + z = z (1 - s^2 / (sd^2 + s^2)) ... finite and positive.
  assert per_example.shape == (4,) and np.all(np.isfinite(per_example)) and np.all(per_example > 0)
