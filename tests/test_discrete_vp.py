"""Discrete-time (DDPM / SMLD) noise conditioning pinned to the paper's code (yang-song/score_sde).

Sampling (models/utils.py there): VP label t (N - 1), std = sqrt(1 - alpha_bar)[int(t (N - 1))];
VE label round((T - t)(N - 1)). Training (losses.py there): the network sees the step index i.
A probe network outputs labels + 1, so the score reveals both the label and the std it used.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde import losses, sde_lib
from score_sde.models import utils as mutils

N = 1000
GRID = np.linspace(1.0, 1e-3, N, dtype=np.float32)   # the paper's PC grid, T down to eps


class LabelProbe(nn.Module):
  """Outputs labels + 1 at every pixel."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    del train
    return jnp.zeros_like(x) + (labels.astype(jnp.float32) + 1.0)[:, None]


def _probe_score(score_fn, t_or_i):
  x = jnp.zeros((len(t_or_i), 1))
  return np.asarray(score_fn(x, jnp.asarray(t_or_i))[:, 0], np.float64)


def _paper_sqrt_1m_alphas_cumprod(sde):
  betas = np.linspace(sde.beta_min / sde.N, sde.beta_max / sde.N, sde.N, dtype=np.float64)
  return np.sqrt(1.0 - np.cumprod(1.0 - betas))


def test_discrete_vp_score_is_the_papers_at_every_step_of_its_grid():
  sde = sde_lib.VPSDE(N=N)
  score_fn = mutils.get_score_fn(sde, LabelProbe(), {}, continuous=False)
  labels = GRID * np.float32(N - 1)                   # float32, as in the paper
  index = labels.astype(np.int32)                     # the paper's labels.astype(int32): floor
  std = _paper_sqrt_1m_alphas_cumprod(sde)[index]
  np.testing.assert_allclose(_probe_score(score_fn, GRID), -(labels + 1.0) / std, rtol=1e-3)
  # The test can fail: rounding instead picks another noise level on about half of the grid,
  # up to 49% off at the last step (index 1 instead of 0).
  assert np.mean(np.round(labels) != index) > 0.45
  rounded = _paper_sqrt_1m_alphas_cumprod(sde)[np.round(labels).astype(int)]
  assert index[-1] == 0 and rounded[-1] / std[-1] > 1.4
  # The ancestral predictor's beta_i and the score's noise level are the same step's.
  np.testing.assert_array_equal(sde.discrete_index(jnp.asarray(GRID)), index)


def test_discrete_training_conditions_on_the_step_index_exactly():
  sde = sde_lib.VPSDE(N=N)
  score_fn = mutils.get_step_score_fn(sde, LabelProbe(), {})
  i = np.arange(N)
  std = _paper_sqrt_1m_alphas_cumprod(sde)
  np.testing.assert_allclose(_probe_score(score_fn, i), -(i + 1.0) / std, rtol=1e-3)


def test_smld_labels_count_from_the_largest_sigma():
  sde = sde_lib.VESDE(N=N)
  train = mutils.get_step_score_fn(sde, LabelProbe(), {})
  np.testing.assert_array_equal(_probe_score(train, np.arange(N)), N - np.arange(N))
  sample = mutils.get_score_fn(sde, LabelProbe(), {}, continuous=False)
  paper = np.round((np.float32(1.0) - GRID) * np.float32(N - 1)).astype(np.int32)
  np.testing.assert_array_equal(_probe_score(sample, GRID), paper + 1.0)


def test_discrete_loss_draws_the_noise_of_the_step_the_network_sees():
  """With the score that is exact for data x = 0 at step i (-x / s_i^2) the DDPM loss is 0,
  which holds only if the loss's noise level and the network's step agree exactly."""
  sde = sde_lib.VPSDE(N=N)
  std = jnp.sqrt(1.0 - sde.alphas_cumprod)

  def exact_at_step(x, i):
    assert jnp.issubdtype(i.dtype, jnp.integer)
    return -x / std[i][:, None]**2

  per_example = losses.dsm_losses(jax.random.PRNGKey(0), exact_at_step, jnp.zeros((512, 3)), sde,
                                  continuous=False)
  assert float(jnp.max(per_example)) < 1e-8


def test_subvp_is_scored_with_continuous_conditioning_as_in_the_paper():
  sde = sde_lib.SubVPSDE(N=N)
  discrete = mutils.get_score_fn(sde, LabelProbe(), {}, continuous=False)
  continuous = mutils.get_score_fn(sde, LabelProbe(), {}, continuous=True)
  np.testing.assert_allclose(_probe_score(discrete, GRID), _probe_score(continuous, GRID))
