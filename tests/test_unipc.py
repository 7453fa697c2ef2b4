"""UniPC on Gaussian data, where the probability flow has a closed-form solution.

For data N(mu, c^2 I) the denoiser is D(y, sigma) = mu + c^2 / (c^2 + sigma^2) (y - mu) and the
scaled flow dy/dsigma = (y - D) / sigma keeps (y - mu) / sqrt(c^2 + sigma^2) constant, so the
exact end point of every trajectory is known. UniPC-p (predictor of order p plus the corrector)
converges at order p + 1 (Zhao et al. 2023, Thm 3.1): the error falls by 2^(p+1) per doubling.
The peer test against the authors' code is ``benchmarks/unipc_reference.py`` (needs torch).
"""
import jax
import numpy as np
import pytest

from score_sde import sde_lib
from score_sde.datasets import toy
from score_sde.errors import ConfigError
from score_sde.sampling import schedules, unipc

MU, C = np.array([0.3, -0.3]), 0.1
GAUSSIAN = toy.GaussianMixture(MU[None], np.full((1, 2), C), np.array([1.0]))
SDES = {'ve': sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0), 'edm': sde_lib.EDMSDE(sigma_max=10.0)}
EPS = 1e-3


def _error(sde, num_steps, order, variant):
  """Largest |x_UniPC - x_exact| over 64 trajectories from the same prior draws."""
  rng = jax.random.PRNGKey(0)
  sampler = unipc.get_unipc_sampler(sde, (64, 2), num_steps, order, variant, eps=EPS)
  x, nfe = sampler(rng, GAUSSIAN.score_fn(sde))
  assert int(nfe) == num_steps
  m, s = schedules.marginal_coeffs(sde, np.array([sde.T, EPS]))
  sigma = s / m
  y_T = np.asarray(sde.prior_sampling(rng, (64, 2)), np.float64) / m[0]
  y_eps = MU + (y_T - MU) * np.sqrt(C**2 + sigma[1]**2) / np.sqrt(C**2 + sigma[0]**2)
  return np.abs(np.asarray(x, np.float64) - m[1] * y_eps).max()


@pytest.mark.parametrize('sde_name,order,variant', [('ve', 1, 'bh2'), ('edm', 2, 'bh1')])
def test_unipc_converges_at_order_plus_one(sde_name, order, variant):
  errors = np.array([_error(SDES[sde_name], n, order, variant) for n in (16, 32, 64)])
  rates = np.log2(errors[:-1] / errors[1:])
  assert np.all(rates > order + 0.7), (errors, rates)


def test_unipc_order3_beats_order2():
  """Order 3 reaches float32's floor (~1e-5 here) by 32 steps, so compare at 16 steps."""
  sde = SDES['edm']
  assert _error(sde, 16, 3, 'bh2') < 0.1 * _error(sde, 16, 2, 'bh2')


def test_unipc_bad_settings_are_one_line_errors():
  sde = SDES['ve']
  with pytest.raises(ConfigError, match='order must be one of'):
    unipc.get_unipc_sampler(sde, (4, 2), 10, order=4)
  with pytest.raises(ConfigError, match="Unknown UniPC variant 'bh3'"):
    unipc.get_unipc_sampler(sde, (4, 2), 10, variant='bh3')
