"""Network parameterizations (score / eps / x0 / velocity), their conversions and the objectives."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.edm import toy_spiral as edm_toy
from configs.rf import toy_spiral as rf_toy
from score_sde import losses, models, parameterization, sde_lib
from score_sde.datasets import toy
from score_sde.errors import ConfigError
from score_sde.models import precond
from score_sde.models import utils as mutils

P = parameterization
ALL_SDES = {
    'vp': sde_lib.VPSDE(),
    'subvp': sde_lib.SubVPSDE(),
    've': sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0),
    'rf': sde_lib.RectifiedFlow(),
    'edm': sde_lib.EDMSDE(sigma_max=10.0),
}
T = np.array([1e-3, 0.05, 0.3, 0.6, 0.9, 0.985])


@pytest.mark.parametrize('name', sorted(ALL_SDES))
def test_conversions_are_exact_and_mutually_inverse(name):
  """In float64: converting the exact target of one kind gives the exact target of every other
  kind, and converting there and back returns any prediction unchanged (to 1e-6: score <-> x0
  at t = 1e-3 passes through s^2 ~ 1e-8 for sub-VP, which costs 8 of float64's 16 digits)."""
  with jax.enable_x64(True):
    sde = ALL_SDES[name]
    t = jnp.asarray(T, jnp.float64)
    c = P.coefficients(sde, t)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x0, eps, q = (jax.random.normal(k, (len(T), 3), jnp.float64) for k in keys)
    x = sde_lib.batch_mul(c.m, x0) + sde_lib.batch_mul(c.s, eps)
    for src, dst in itertools.product(P.PARAMETERIZATIONS, repeat=2):
      np.testing.assert_allclose(P.convert(P.target(src, x0, eps, c), x, src, dst, c),
                                 P.target(dst, x0, eps, c), rtol=1e-9, atol=1e-9,
                                 err_msg=f'{src} -> {dst}')
      np.testing.assert_allclose(P.convert(P.convert(q, x, src, dst, c), x, dst, src, c), q,
                                 rtol=1e-6, atol=1e-6, err_msg=f'{src} -> {dst} -> {src}')


@pytest.mark.parametrize('name', sorted(ALL_SDES))
def test_velocity_of_the_exact_score_is_the_probability_flow_drift(name):
  sde, gmm = ALL_SDES[name], toy.gaussian_mixture()

  @jax.jit
  def velocity_and_drift(x, t):
    velocity = P.convert(gmm.score(x, t, sde), x, 'score', 'velocity', P.coefficients(sde, t))
    return velocity, sde.reverse(gmm.score_fn(sde), probability_flow=True).sde(x, t)[0]
  t = jnp.asarray(T[1:-1], jnp.float32)
  velocity, drift = velocity_and_drift(jax.random.normal(jax.random.PRNGKey(1), (len(t), 2)), t)
  np.testing.assert_allclose(velocity, drift, rtol=2e-4, atol=2e-4)


# ---------------------------------------------------------------------------------------------
# Flow matching on Gaussian data: x(0) ~ N(mu, sd^2 I), x(t) = (1 - t) x(0) + t z, v = z - x(0).
# (x(0), z, x(t)) are jointly Gaussian, so with V = (1 - t)^2 sd^2 + t^2 and r = x - (1 - t) mu,
#   v*(x, t) = E[z - x(0) | x(t) = x] = (t - (1 - t) sd^2) r / V - mu,
#   E[||v - v*||^2] / D = 1 + sd^2 - (t - (1 - t) sd^2)^2 / V   per dimension.
# ---------------------------------------------------------------------------------------------
MU, SD = np.array([0.8, -0.5], np.float32), 0.6


def _exact_velocity(x, t):
  v = (1 - t)**2 * SD**2 + t**2
  return sde_lib.batch_mul((t - (1 - t) * SD**2) / v, x - (1 - t)[:, None] * MU) - MU


def _fm_losses(sde, velocity_fn, n=20000):
  x0 = MU + SD * jax.random.normal(jax.random.PRNGKey(2), (n, 2))
  score_fn = lambda x, t: P.convert(velocity_fn(x, t), x, 'velocity', 'score',
                                    P.coefficients(sde, t))
  return losses.dsm_losses(jax.random.PRNGKey(3), score_fn, x0, sde, reduce_mean=True,
                           objective='velocity')


def test_flow_matching_loss_is_minimised_by_the_exact_velocity():
  sde = sde_lib.RectifiedFlow(t_max=0.99)
  h = 0.2
  directions = {'along v*': _exact_velocity, 'along x': lambda x, t: x}
  loss = jax.jit(lambda d: jnp.stack([
      jnp.mean(_fm_losses(sde, lambda x, t: _exact_velocity(x, t) + d * w(x, t)))
      for w in directions.values()]))
  lm, l0, lp = (np.asarray(loss(d), np.float64) for d in (-h, 0.0, h))
  minimiser = h * (lm - lp) / (2 * (lp - 2 * l0 + lm))    # of the exact quadratic in d
  assert np.all(np.abs(minimiser) < 0.02), dict(zip(directions, minimiser))
  # Its minimum value is the conditional variance, averaged over t ~ U(eps, T).
  t = np.linspace(1e-5, sde.T, 20001)
  floor = np.mean(1 + SD**2 - (t - (1 - t) * SD**2)**2 / ((1 - t)**2 * SD**2 + t**2))
  np.testing.assert_allclose(l0[0], floor, rtol=0.02)


def test_eps_objective_is_the_papers_loss():
  sde, x0 = ALL_SDES['vp'], jax.random.normal(jax.random.PRNGKey(4), (64, 2))
  score_fn = lambda x, t: -0.7 * x
  default, eps = jax.jit(lambda rng: [losses.dsm_losses(rng, score_fn, x0, sde, objective=o)
                                       for o in (None, 'eps')])(jax.random.PRNGKey(5))
  np.testing.assert_allclose(eps, default, rtol=1e-4)


def test_edm_process_draws_its_own_log_normal_noise_levels():
  sde = sde_lib.EDMSDE(sigma_max=80.0, P_mean=-0.4, P_std=0.9)
  u = (jnp.arange(4000) + 0.5) / 4000
  times = jax.jit(lambda u: losses.training_times(sde, u, 1e-5, None))(u)
  log_sigma = np.log(np.asarray(sde.sigma(times)))
  np.testing.assert_allclose([log_sigma.mean(), log_sigma.std()], [-0.4, 0.9], atol=0.01)


# ---------------------------------------------------------------------------------------------
# Models and configs.
# ---------------------------------------------------------------------------------------------

def test_edm_toy_config_builds_its_loss():
  """EDM's toy config: the MLP is preconditioned, the loss traces (shapes only: no compile)."""
  config = edm_toy.get_config()
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  assert isinstance(model, precond.EDMPrecond) and isinstance(sde, sde_lib.EDMSDE)
  loss_fn = losses.get_loss_fn(sde, model, train=True, reduce_mean=True)
  x = jax.ShapeDtypeStruct((64, 2), jnp.float32)
  loss = jax.eval_shape(
      lambda rng, x: loss_fn(mutils.init_params(rng, model, (2,)), x, rng, 0)[0],
      jax.random.PRNGKey(0), x)
  assert loss.shape == ()


def test_rf_toy_config_reads_its_network_as_a_velocity():
  """Rectified flow's toy config (a smaller MLP): the velocity network keeps the bare network's
  parameters, its score is -(x + (1 - t) v) / t, and its flow-matching loss traces."""
  config = rf_toy.get_config()
  config.model.nf, config.model.num_layers = 32, 1
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  assert isinstance(model, precond.Parameterized) and model.parameterization == 'velocity'
  shapes = jax.eval_shape(lambda r: mutils.init_params(r, model, (2,)), jax.random.PRNGKey(0))
  bare = jax.eval_shape(lambda r: mutils.init_params(r, model.net, (2,)), jax.random.PRNGKey(0))
  assert jax.tree.structure(shapes) == jax.tree.structure(bare)
  # Deterministic non-zero parameters (no random initialiser to compile).
  leaves, tree = jax.tree.flatten(shapes)
  params = jax.tree.unflatten(tree, [jnp.cos(jnp.arange(math.prod(l.shape)) + i).reshape(l.shape)
                                     * 0.3 for i, l in enumerate(leaves)])
  x = toy.get_toy_sampler('spiral')(jax.random.PRNGKey(1), 64)
  t = jnp.linspace(0.01, 0.98, 64)
  out, score = jax.jit(lambda p: (mutils.get_model_fn(model, p)(x, t * 999),
                                  mutils.get_score_fn(sde, model, p)(x, t)))(params)
  assert float(jnp.std(out)) > 0.01
  np.testing.assert_allclose(score, -(x + sde_lib.batch_mul(1 - t, out)) / t[:, None],
                             rtol=1e-4, atol=1e-5)
  loss_fn = losses.get_loss_fn(sde, model, train=True, reduce_mean=True,
                               objective=config.training.objective)
  assert jax.eval_shape(loss_fn, params, x, jax.random.PRNGKey(2), 0)[0].shape == ()


def test_bad_names_and_combinations_raise_config_errors():
  config = rf_toy.get_config()
  config.model.parameterization = 'v'
  with pytest.raises(ConfigError, match="valid: \\['score', 'eps', 'x0', 'velocity'\\]"):
    models.get_model(config)
  config = edm_toy.get_config()
  config.model.parameterization = 'x0'
  with pytest.raises(ConfigError, match="needs model.precond='paper'"):
    models.get_model(config)
  sde, model = ALL_SDES['vp'], models.get_model(rf_toy.get_config())
  with pytest.raises(ConfigError, match="training.objective 'flow'; valid"):
    losses.get_loss_fn(sde, model, train=True, objective='flow')
  with pytest.raises(ConfigError, match='training.continuous=False'):
    losses.get_loss_fn(sde, model, train=True, objective='velocity', continuous=False)
  with pytest.raises(ConfigError, match='likelihood_weighting'):
    losses.get_loss_fn(sde, model, train=True, objective='x0', likelihood_weighting=True)
  with pytest.raises(ConfigError, match='continuous=True'):
    mutils.get_score_fn(sde, model, {}, continuous=False)
