"""Data-prediction clipping (score_sde/sampling/x0_clip.py) on scores whose x0 prediction is
known in closed form: score = (m x0(x, t) - x) / s^2 for a chosen x0(x, t)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import parameterization, sde_lib
from score_sde.sampling import x0_clip

SDES = [sde_lib.VPSDE(), sde_lib.VESDE(sigma_min=0.01, sigma_max=20.0)]


def _score_predicting(sde, x0_fn):
  def score_fn(x, t):
    c = parameterization.coefficients(sde, t)
    return parameterization.convert(x0_fn(x, t), x, 'x0', 'score', c)
  return score_fn


def _x0_of(sde, score_fn, x, t):
  return parameterization.convert(score_fn(x, t), x, 'score', 'x0',
                                  parameterization.coefficients(sde, t))


def _inputs(shape=(4, 6, 6, 1)):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  return x, jnp.linspace(0.1, 0.9, shape[0])


@pytest.mark.parametrize('sde', SDES, ids=['vp', 've'])
@pytest.mark.parametrize('kind', ['static', 'dynamic'])
def test_in_range_prediction_is_unchanged(sde, kind):
  score_fn = _score_predicting(sde, lambda x, t: 0.95 * jnp.tanh(x))
  x, t = _inputs()
  clipped = x0_clip.x0_clipped_score_fn(score_fn, sde, kind, (-1.0, 1.0))
  np.testing.assert_allclose(clipped(x, t), score_fn(x, t), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('sde', SDES, ids=['vp', 've'])
def test_static_clips_to_the_range(sde):
  score_fn = _score_predicting(sde, lambda x, t: 3.0 * x)
  x, t = _inputs()
  clipped = x0_clip.x0_clipped_score_fn(score_fn, sde, 'static', (0.0, 1.0))
  np.testing.assert_allclose(_x0_of(sde, clipped, x, t), np.clip(3.0 * np.asarray(x), 0.0, 1.0),
                             atol=2e-4)


@pytest.mark.parametrize('lo,hi', [(-1.0, 1.0), (0.0, 1.0)])
def test_dynamic_threshold_rescales_each_example(lo, hi):
  sde, p = SDES[0], 0.9
  # Example 0 stays inside the range (its threshold is 1: only clipped at the bounds, here none).
  scale = jnp.array([0.3, 2.0, 4.0, 8.0]).reshape(4, 1, 1, 1)
  x0_fn = lambda x, t: (hi + lo) / 2 + (hi - lo) / 2 * scale * jnp.tanh(x)
  x, t = _inputs()
  clipped = x0_clip.x0_clipped_score_fn(_score_predicting(sde, x0_fn), sde, 'dynamic', (lo, hi), p)
  z = np.asarray(scale * jnp.tanh(x)).reshape(4, -1)
  r = np.maximum(np.quantile(np.abs(z), p, axis=1, keepdims=True), 1.0)
  expected = (hi + lo) / 2 + (hi - lo) / 2 * np.clip(z, -r, r) / r
  got = np.asarray(_x0_of(sde, clipped, x, t)).reshape(4, -1)
  np.testing.assert_allclose(got, expected, atol=2e-4)
  assert got.min() >= lo - 2e-4 and got.max() <= hi + 2e-4
  assert (r[1:] > 1).all()    # the other three really were rescaled


def test_bad_names_are_one_line():
  with pytest.raises(x0_clip.ConfigError, match=r"valid: None, 'static', 'dynamic'"):
    x0_clip.check('clamp')
  with pytest.raises(x0_clip.ConfigError, match=r'fraction in \(0, 1\]'):
    x0_clip.check('dynamic', 99.5)


def test_clipping_unbounded_toy_data_is_a_config_error():
  from configs import default_toy
  config = default_toy.get_config()
  config.sampling.x0_clip = 'static'
  with pytest.raises(x0_clip.ConfigError, match=r"needs bounded data.*2-D toy data"):
    x0_clip.from_config(config, SDES[0], lambda x, t: x)
