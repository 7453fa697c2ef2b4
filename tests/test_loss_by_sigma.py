"""Loss by noise level: the empirical optimum and the linear denoiser against closed forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from score_sde import sde_lib, training
from score_sde.evaluation import loop
from score_sde.evaluation import loss_by_sigma as lbs

SDES = {'vp': sde_lib.VPSDE(), 've': sde_lib.VESDE(sigma_min=0.01, sigma_max=20.0),
        'rf': sde_lib.RectifiedFlow()}


def _points(n=6, shape=(2, 2, 1), seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n,) + shape).astype(np.float32)


def _score_of(denoiser, sde):
  """score(x, t) = (m D(x / m; sigma) - x) / s^2 of a denoiser D(x~, sigma)."""
  def score_fn(x, t):
    mean, s = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    m = mean[:, 0]
    d = denoiser(sde_lib.batch_mul(1.0 / m, x), s / m)
    return sde_lib.batch_mul(1.0 / s**2, sde_lib.batch_mul(m, d) - x)
  return score_fn


def test_optimal_denoiser_of_two_points_is_tanh():
  # Two points +-a: the posterior mean of y given x~ = y + sigma z is a tanh(<a, x~> / sigma^2).
  a = np.array([[0.6, -0.3], [0.2, 0.9]], np.float32)[None, ..., None]
  data = np.concatenate([a, -a])
  x = np.random.default_rng(1).normal(size=(7, 2, 2, 1)).astype(np.float32)
  sigma = np.geomspace(0.3, 3.0, 7).astype(np.float32)
  got = lbs.optimal_denoiser(jnp.asarray(x), jnp.asarray(sigma), jnp.asarray(data))
  want = a * np.tanh(np.sum(a * x, axis=(1, 2, 3)) / sigma**2)[:, None, None, None]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', sorted(SDES))
def test_model_that_is_the_optimum_scores_the_optimum(name):
  # The score of the exact optimum, read back through each SDE's m(t), s(t), loses exactly L*,
  # which beats the linear denoiser (up to Monte-Carlo noise where both approach the mean's loss).
  sde, data = SDES[name], _points()
  score_fn = jax.jit(_score_of(lambda x, s: lbs.optimal_denoiser(x, s, jnp.asarray(data)), sde))
  r = lbs.loss_by_sigma(jax.random.PRNGKey(0), score_fn, sde, data, num_examples=32,
                        edges=lbs.bucket_edges(num_buckets=5))
  inside = ~np.isnan(r['model'])
  lo, hi = lbs.sigma_range(sde)
  centres = np.sqrt(r['edges'][:-1] * r['edges'][1:])
  assert inside.sum() >= 3 and np.all(inside[(centres > 2 * lo) & (centres < hi / 2)])
  np.testing.assert_allclose(r['model'][inside], r['optimum'][inside], rtol=2e-3, atol=1e-6)
  assert np.all(r['optimum'] <= r['linear'] * 1.05 + 1e-6)
  assert r['optimum'][0] < 1e-3 * r['linear'][-1]   # memorised at the smallest noise


def test_linear_denoiser_loss_matches_its_closed_form():
  # Monte Carlo of the Wiener filter's loss (through the VP score) against sum sigma^2 lam /
  # (lam + sigma^2) / d, within 4 standard errors; buckets narrowed to one sigma each.
  sde, data = SDES['vp'], _points(n=8)
  sigma = np.array([0.05, 0.3, 1.0, 4.0])
  edges = np.stack([sigma, sigma * (1 + 1e-6)], 1).ravel()
  score_fn = _score_of(lambda x, s: jnp.asarray(lbs.linear_denoiser(x, s, data), jnp.float32),
                       sde)
  r = lbs.loss_by_sigma(jax.random.PRNGKey(3), score_fn, sde, data, edges=edges,
                        num_examples=512, batch_size=512)
  want = lbs.linear_denoiser_loss(sigma, data)
  got = r['model'][::2]
  np.testing.assert_allclose(got, r['linear'][::2], rtol=1e-3)
  assert np.all(np.abs(got - want) < 0.15 * want)
  assert np.all(np.diff(want) > 0) and want[-1] < r['mean'][0]


def test_time_of_sigma_inverts_sigma_of_t():
  for sde in SDES.values():
    lo, hi = lbs.sigma_range(sde)
    sigma = jnp.asarray(np.geomspace(lo * 1.01, hi * 0.99, 5), jnp.float32)
    np.testing.assert_allclose(sde.sigma_of_t(lbs.time_of_sigma(sde, sigma)), sigma,
                               rtol=1e-3)


def test_single_point_data_has_zero_optimal_and_linear_loss():
  data = _points(n=1)
  r = lbs.loss_by_sigma(jax.random.PRNGKey(0), lambda x, t: -x, SDES['ve'], data,
                        num_examples=8, edges=lbs.bucket_edges(num_buckets=3))
  np.testing.assert_allclose(r['optimum'], 0.0, atol=1e-10)
  np.testing.assert_allclose(r['linear'], 0.0, atol=1e-10)


def test_training_and_eval_report_the_loss_by_sigma(tmp_path):
  # eval.loss_by_sigma: TensorBoard scalars at eval_freq, a report entry and a plot per checkpoint.
  config = helpers.tiny_toy_config(n_iters=2, log_freq=2, eval_freq=2, snapshot_freq=2,
                                   snapshot_freq_for_preemption=2)
  config.model.nf, config.model.num_layers = 8, 1
  config.eval.update(loss_by_sigma=True, loss_by_sigma_examples=8, loss_by_sigma_reference=64,
                     batch_size=64, enable_loss=False)
  training.train_and_evaluate(config, str(tmp_path))
  events = b''.join(p.read_bytes() for p in (tmp_path / 'tensorboard').rglob('*') if p.is_file())
  assert b'eval/loss_sigma_' in events
  report = loop.evaluate(config, str(tmp_path))[2]['loss_by_sigma']
  assert list(report) == lbs.bucket_names(lbs.bucket_edges())
  inside = [v for v in report.values() if v['model'] is not None]
  assert len(inside) >= 5 and all(np.isfinite(v['model']) for v in inside)
  assert all(v['optimum'] <= v['linear'] * 1.05 + 1e-6 for v in report.values())
  assert (tmp_path / 'eval' / 'loss_by_sigma_2.png').exists()
