"""Samplers against the exact score of a Gaussian mixture, for VP, sub-VP and VE.

Metric (``mixture_fit``): per-mode weight error and within-mode std ratio, as a z-score in units
of the exact-sample standard deviation. For 2,000 exact samples z has median 2.0 and 99th
percentile 3.0 (100 seeds), so the tolerance z <= 4 means "within the noise of as many exact
samples". The mixture is the default 8 modes on a circle of radius 0.8 with std 0.08; VE uses
sigma_max = 3 (about the data's diameter) so its prior is right.
"""
import jax
import numpy as np
import pytest

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()
N_SAMPLES = 2000
Z_TOL = 4.0
SDES = {
    'vp': lambda n=1000: sde_lib.VPSDE(N=n),
    'subvp': lambda n=1000: sde_lib.SubVPSDE(N=n),
    've': lambda n=1000: sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=n),
}


def _config(**sampling_fields):
  config = default_toy.get_config()
  config.sampling.num_steps = None
  for key, value in sampling_fields.items():
    setattr(config.sampling, key, value)
  return config


def _sample(sde_name, n=N_SAMPLES, seed=0, **sampling_fields):
  sde = SDES[sde_name]()
  sampler = sampling.get_sampler(_config(**sampling_fields), sde, (n, 2))
  score_fn = GMM.score_fn(sde)
  samples, nfe = jax.jit(lambda rng: sampler(rng, score_fn))(jax.random.PRNGKey(seed))
  return np.asarray(samples), int(nfe)


def _assert_fits(samples):
  fit = mixture_fit(samples, GMM)
  assert fit['z'] <= Z_TOL, fit


def test_metric_separates_exact_from_wrong_samples():
  exact = GMM.sample(jax.random.PRNGKey(1), N_SAMPLES)
  assert mixture_fit(exact, GMM)['z'] <= Z_TOL
  assert mixture_fit(exact * 1.1, GMM)['z'] > Z_TOL          # modes 10% too wide (and shifted)
  wide = toy.gaussian_mixture(std=0.088).sample(jax.random.PRNGKey(1), N_SAMPLES)
  assert mixture_fit(wide, GMM)['z'] > Z_TOL
  lopsided = np.concatenate([exact[:1700], exact[exact[:, 0] > 0.7][:300]])  # mode 0 at 1.5x weight
  assert mixture_fit(lopsided, GMM)['z'] > Z_TOL


# The paper's defaults: N = 1000 steps; one SDE per default configuration of the paper.
@pytest.mark.parametrize('sde_name,predictor,corrector', [
    ('vp', 'euler_maruyama', 'none'),
    ('subvp', 'euler_maruyama', 'none'),
    ('ve', 'reverse_diffusion', 'langevin'),
])
def test_pc_paper_defaults(sde_name, predictor, corrector):
  samples, nfe = _sample(sde_name, n=1000, method='pc', predictor=predictor, corrector=corrector)
  assert nfe == 1000 * (1 + (corrector != 'none'))
  _assert_fits(samples)


@pytest.mark.parametrize('sde_name,predictor,corrector', [
    ('vp', 'reverse_diffusion', 'langevin'),
    ('vp', 'ancestral_sampling', 'none'),
    ('subvp', 'reverse_diffusion', 'langevin'),
    ('subvp', 'euler_maruyama', 'ald'),
    ('ve', 'euler_maruyama', 'none'),
    ('ve', 'ancestral_sampling', 'ald'),
])
def test_pc_predictors_and_correctors(sde_name, predictor, corrector):
  samples, nfe = _sample(sde_name, method='pc', predictor=predictor, corrector=corrector,
                         num_steps=200)
  assert nfe == 200 * (1 + (corrector != 'none'))
  _assert_fits(samples)


def test_pc_probability_flow_predictor():
  samples, nfe = _sample('ve', method='pc', predictor='reverse_diffusion', corrector='langevin',
                         probability_flow=True, num_steps=200)
  assert nfe == 400
  _assert_fits(samples)


def test_corrector_only_annealed_langevin_ve():
  """SMLD: annealed Langevin dynamics alone, several steps per noise level."""
  samples, nfe = _sample('ve', method='pc', predictor='none', corrector='ald', num_steps=200,
                         n_steps_each=5, snr=0.3)
  assert nfe == 1000
  _assert_fits(samples)


@pytest.mark.parametrize('sde_name', sorted(SDES))
def test_probability_flow_ode(sde_name):
  samples, nfe = _sample(sde_name, method='ode')
  assert 20 < nfe < 400
  _assert_fits(samples)


@pytest.mark.parametrize('sde_name', sorted(SDES))
def test_dpm_solver_order3_at_20_nfe(sde_name):
  samples, nfe = _sample(sde_name, method='dpm_solver', order=3, num_steps=20)
  assert nfe == 20
  _assert_fits(samples)


@pytest.mark.parametrize('order', [1, 2])
def test_dpm_solver_lower_orders(order):
  samples, _ = _sample('ve', method='dpm_solver', order=order, num_steps=60)
  _assert_fits(samples)


def test_ddim_is_dpm_solver_order1():
  ddim, nfe = _sample('vp', n=64, method='ddim', num_steps=7)
  dpm1, _ = _sample('vp', n=64, method='dpm_solver', order=1, num_steps=7)
  assert nfe == 7
  np.testing.assert_array_equal(ddim, dpm1)


@pytest.mark.parametrize('sde_name', sorted(SDES))
def test_heun_at_35_nfe(sde_name):
  samples, nfe = _sample(sde_name, method='heun', num_steps=18)
  assert nfe == 35
  _assert_fits(samples)


def test_heun_with_churn():
  samples, nfe = _sample('ve', method='heun', num_steps=18, S_churn=10.0, S_min=0.05, S_max=2.0)
  assert nfe == 35
  _assert_fits(samples)
