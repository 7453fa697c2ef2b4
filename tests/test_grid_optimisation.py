"""Optimised time grids: the optimiser lowers the endpoint error on the mixture, the stored grid
samples within the noise floor where the default grid does not, and bad grid files are one line."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.datasets import toy
from score_sde.errors import ConfigError, MissingFileError
from score_sde.sampling import grid_optimisation, schedules, unipc
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()
VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0)
STEPS = 5


@pytest.fixture(scope='module')
def grid_path(tmp_path_factory):
  times, record = grid_optimisation.optimise_grid(
      VE, GMM.score_fn(VE), (256, 2), STEPS, order=2, variant='bh1', iterations=30,
      ref_steps=64)
  assert record['objective_final'] < 0.1 * record['objective_init'], record
  assert np.all(np.diff(times) < 0) and times[0] == VE.T and times[-1] == 1e-3
  return grid_optimisation.save_grid(str(tmp_path_factory.mktemp('grid') / 'g.json'), times, VE, record)


def _z(time_schedule, grid_path=None, steps=STEPS, sde=VE):
  sampler = unipc.get_unipc_sampler(sde, (2000, 2), steps, 2, 'bh1', time_schedule=time_schedule,
                                    grid_path=grid_path)
  return mixture_fit(np.asarray(sampler(jax.random.PRNGKey(1), GMM.score_fn(sde))[0]), GMM)['z']


def test_optimised_grid_reaches_the_floor_at_5_nfe(grid_path):
  """z <= 4 is within the noise of 2,000 exact samples (test_sampling); logSNR steps are not."""
  assert _z('optimised', grid_path) <= 4.0 < _z('logsnr')


@pytest.mark.parametrize('method,num_steps,nfe', [('dpm_solver', STEPS, STEPS),
                                                  ('heun', STEPS + 1, 2 * STEPS + 1)])
def test_every_fixed_grid_method_steps_on_the_grid_file(grid_path, method, num_steps, nfe):
  """A grid of n + 1 points is n steps of DPM-Solver++ / UniPC and n + 1 levels of Heun."""
  config = default_toy.get_config()
  config.sampling.update(method=method, num_steps=num_steps, time_schedule='optimised',
                         grid_path=grid_path)
  sampler = sampling.get_sampler(config, VE, (64, 2))
  samples, sampler_nfe = sampler(jax.random.PRNGKey(0), GMM.score_fn(VE))
  assert int(sampler_nfe) == nfe and np.all(np.isfinite(samples))


def test_times_of_sigma_inverts_and_differentiates():
  sigma = jnp.array([0.05, 0.4, 2.0])
  t = grid_optimisation.times_of_sigma(VE, sigma)
  np.testing.assert_allclose(schedules.scaled_sigma(VE, np.asarray(t)), sigma, rtol=1e-5)
  grad = jax.grad(lambda s: jnp.sum(grid_optimisation.times_of_sigma(VE, s)))(sigma)
  h = 1e-3 * sigma
  fd = (np.asarray(grid_optimisation.times_of_sigma(VE, sigma + h))
        - np.asarray(grid_optimisation.times_of_sigma(VE, sigma - h))) / (2 * h)
  np.testing.assert_allclose(grad, fd, rtol=1e-2)


def test_bad_grid_files_are_one_line_errors(grid_path, tmp_path):
  with pytest.raises(ConfigError, match=r'has 6 points \(made for unipc with 5 steps\); this '
                                        r'sampler needs 9'):
    _z('optimised', grid_path, steps=8)
  with pytest.raises(ConfigError, match='was made for VESDE'):
    _z('optimised', grid_path, sde=sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0))
  with pytest.raises(MissingFileError, match='does not exist'):
    _z('optimised', str(tmp_path / 'none.json'))
  with pytest.raises(ConfigError, match='needs sampling.grid_path'):
    _z('optimised', None)
