"""Post-hoc EMA (score_sde/posthoc_ema.py): closed forms against numerical integration, the
per-step update against its weights, and reconstruction against directly tracked EMAs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from score_sde import posthoc_ema
from score_sde.errors import ConfigError

STEPS, EVERY, STORED = 300, 10, (0.05, 0.10)


@pytest.mark.parametrize('gamma', [0.5, 6.94, 16.97])
def test_sigma_rel_matches_numerical_integration(gamma):
  profile = lambda tau: (gamma + 1) * tau**gamma            # t = 1: sigma_rel is the std
  mass, mean, second = (integrate.quad(lambda u, k=k: u**k * profile(u), 0, 1)[0] for k in range(3))
  np.testing.assert_allclose(mass, 1.0, rtol=1e-9)
  np.testing.assert_allclose(posthoc_ema.sigma_rel_of_gamma(gamma), np.sqrt(second - mean**2),
                             rtol=1e-7)
  np.testing.assert_allclose(posthoc_ema.gamma_of_sigma_rel(posthoc_ema.sigma_rel_of_gamma(gamma)),
                             gamma, rtol=1e-9)


def test_paper_exponents():
  # EDM2 Sec. 3.1: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94.
  assert round(posthoc_ema.gamma_of_sigma_rel(0.05), 2) == 16.97
  assert round(posthoc_ema.gamma_of_sigma_rel(0.10), 2) == 6.94


@pytest.mark.parametrize('ga,ta,gb,tb', [(6.94, 200.0, 16.97, 300.0), (16.97, 300.0, 2.0, 120.0),
                                         (3.0, 50.0, 3.0, 50.0)])
def test_inner_product_matches_numerical_integration(ga, ta, gb, tb):
  p = lambda g, t, u: (g + 1) * u**g / t**(g + 1)
  numeric = integrate.quad(lambda u: p(ga, ta, u) * p(gb, tb, u), 0, min(ta, tb), epsabs=0,
                           epsrel=1e-11)[0]
  np.testing.assert_allclose(posthoc_ema.profile_inner_product(ga, ta, gb, tb), numeric, rtol=1e-8)


def _track(trajectory, sigma_rels):
  """Every step's power EMAs of ``trajectory`` (a tree of (STEPS, ...) leaves), one per length."""
  gammas = [posthoc_ema.gamma_of_sigma_rel(s) for s in sigma_rels]
  first = jax.tree.map(lambda x: x[0], trajectory)

  def step(emas, inputs):
    t, params = inputs
    emas = posthoc_ema.update(emas, params, t, gammas)
    return emas, emas
  _, history = jax.lax.scan(step, tuple(first for _ in gammas),
                            (jnp.arange(1, STEPS + 1), trajectory))
  return history


def _trajectory():
  """A training-like path: decay towards an optimum, a slow drift, and step-to-step noise."""
  rng = np.random.default_rng(0)
  i = np.arange(1, STEPS + 1, dtype=np.float64)[:, None]
  def leaf(d):
    c, a, b = rng.normal(size=(3, 1, d))
    return (c + a * np.exp(-i / 60) + b * np.sin(i / 45) + 0.1 * rng.normal(size=(STEPS, d)))
  return {'w': leaf(3).astype(np.float32), 'b': leaf(4).reshape(STEPS, 2, 2).astype(np.float32)}


def test_update_weights_each_step_as_stated():
  traj = _trajectory()
  (history,) = _track(traj, (0.1,))
  gamma = posthoc_ema.gamma_of_sigma_rel(0.1)
  for t in (1, 7, STEPS):
    expected = np.tensordot(posthoc_ema.step_weights(gamma, t), traj['w'][:t], axes=1)
    np.testing.assert_allclose(history['w'][t - 1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('sigma_rel,step', [(0.07, STEPS), (0.15, 150), (0.10, STEPS)])
def test_reconstruction_equals_directly_tracked_ema(sigma_rel, step):
  traj = _trajectory()
  history = _track(traj, STORED + (sigma_rel,))
  snapshots = [(t, STORED, [jax.tree.map(lambda h: np.asarray(h[t - 1]), history[j])
                            for j in range(len(STORED))])
               for t in range(EVERY, STEPS + 1, EVERY)]
  rebuilt, residual = posthoc_ema.reconstruct(snapshots, sigma_rel, step)
  direct = jax.tree.map(lambda h: np.asarray(h[step - 1]), history[-1])
  # Tolerance: both are weighted sums of theta_1..theta_step with weights summing to 1, so they
  # differ by sum_i (w_rec_i - w_i)(theta_i - c) <= ||w_rec - w||_1 max_i |theta_i - c| (c: the
  # mean), plus float32 rounding of the tracked EMAs (< 1e-5 here). A stored profile is fitted
  # exactly (w_rec = w), and the fit is close for lengths between the stored ones.
  gamma = posthoc_ema.gamma_of_sigma_rel(sigma_rel)
  used = [(t, s) for t in range(EVERY, step + 1, EVERY) for s in STORED]
  x, _ = posthoc_ema.solve_coefficients([posthoc_ema.gamma_of_sigma_rel(s) for _, s in used],
                                        [t for t, _ in used], gamma, step)
  w_rec = sum(xk * np.pad(posthoc_ema.step_weights(posthoc_ema.gamma_of_sigma_rel(s), t),
                          (0, step - t)) for xk, (t, s) in zip(x, used))
  l1 = np.abs(w_rec - posthoc_ema.step_weights(gamma, step)).sum()
  assert residual < 0.02 and l1 < 0.02   # measured: 0.0011 / 0.0010 (0.07), 0.010 / 0.011 (0.15)
  for name in traj:
    spread = np.abs(traj[name][:step] - traj[name][:step].mean(0)).max(0)
    np.testing.assert_array_less(np.abs(rebuilt[name] - direct[name]), l1 * spread + 1e-5)


def test_bad_input_is_one_line():
  tree = {'w': np.zeros(2, np.float32)}
  snapshots = [(t, STORED, [tree, tree]) for t in (100, 200)]
  with pytest.raises(ConfigError, match='stored none'):
    posthoc_ema.reconstruct([], 0.08)
  with pytest.raises(ConfigError, match=r'cannot be rebuilt .* off the asked profile'):
    posthoc_ema.reconstruct(snapshots, 0.01)
  with pytest.raises(ConfigError, match=r'must lie in \(0, 0.2887\)'):
    posthoc_ema.reconstruct(snapshots, 0.3)
  with pytest.raises(ConfigError, match=r'snapshot steps: \[100, 200\]'):
    posthoc_ema.reconstruct(snapshots, 0.08, step=150)
