"""Sampler plumbing: true NFE, one compilation, pmap, bad input, DPM-Solver++'s order."""
import chex
import jax
import numpy as np
import pytest

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.sampling import schedules, solvers
from score_sde.datasets import toy

GMM = toy.gaussian_mixture()
VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=1000)


def _config(**sampling_fields):
  config = default_toy.get_config()
  for key, value in sampling_fields.items():
    setattr(config.sampling, key, value)
  return config


METHOD_CASES = [
    dict(method='pc', predictor='euler_maruyama', corrector='none', num_steps=5),
    dict(method='pc', predictor='reverse_diffusion', corrector='langevin', num_steps=4,
         n_steps_each=2),
    dict(method='pc', predictor='none', corrector='ald', num_steps=3),
    dict(method='ode', rtol=1e-3, atol=1e-3),
    dict(method='ode', rtol=1e-5, atol=1e-5, noise_removal=False),
    dict(method='dpm_solver', order=3, num_steps=6),
    dict(method='ddim', num_steps=4),
    dict(method='heun', num_steps=5, S_churn=5.0),
    dict(method='unipc', order=3, num_steps=6),
]


@pytest.mark.parametrize('fields', METHOD_CASES, ids=lambda f: '-'.join(map(str, f.values())))
def test_reported_nfe_counts_every_score_evaluation(fields):
  """Counts the score evaluations that actually run (a host callback; tests only)."""
  calls = []
  exact = GMM.score_fn(VE)

  def counted_score(x, t):
    jax.debug.callback(lambda: calls.append(1))
    return exact(x, t)

  sampler = sampling.get_sampler(_config(**fields), VE, (16, 2))
  _, nfe = jax.jit(lambda rng: sampler(rng, counted_score))(jax.random.PRNGKey(0))
  jax.effects_barrier()
  assert int(nfe) == len(calls) > 0


@pytest.mark.parametrize('fields', [METHOD_CASES[1], METHOD_CASES[3], METHOD_CASES[5],
                                    METHOD_CASES[7]], ids=['pc', 'ode', 'dpm', 'heun'])
def test_compiles_once_and_traces_score_a_fixed_number_of_times(fields):
  def score_traces(num_steps):
    chex.clear_trace_counter()
    traces = []
    exact = GMM.score_fn(VE)

    def traced_score(x, t):
      traces.append(1)
      return exact(x, t)

    cfg = dict(fields, num_steps=num_steps) if 'num_steps' in fields else fields
    sampler = sampling.get_sampler(_config(**cfg), VE, (8, 2))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(rng):
      return sampler(rng, traced_score)
    for seed in range(3):
      run(jax.random.PRNGKey(seed))
    return len(traces)
  assert score_traces(3) == score_traces(6) <= 8


def test_sampler_runs_inside_pmap():
  sampler = sampling.get_sampler(_config(method='dpm_solver', num_steps=5), VE, (4, 2))
  score_fn = GMM.score_fn(VE)
  n_dev = min(2, jax.local_device_count())
  run = jax.pmap(lambda rng: sampler(rng, score_fn))
  samples, nfe = run(jax.random.split(jax.random.PRNGKey(0), n_dev))
  assert samples.shape == (n_dev, 4, 2) and np.all(np.asarray(nfe) == 5)
  assert np.all(np.isfinite(samples))


@pytest.mark.parametrize('fields,sde,match', [
    (dict(method='euler'), VE, 'valid: .*dpm_solver'),
    (dict(method='pc', predictor='leapfrog'), VE, 'valid: .*reverse_diffusion'),
    (dict(method='pc', corrector='hmc'), VE, 'valid: .*langevin'),
    (dict(method='pc', predictor='ancestral_sampling'), sde_lib.SubVPSDE(),
     'ancestral_sampling.*SubVPSDE'),
    (dict(method='pc', num_steps=0), VE, 'num_steps must be >= 1'),
    (dict(method='pc', predictor='ancestral_sampling', probability_flow=True), VE,
     'probability_flow=True is available for predictors'),
    (dict(method='pc', predictor='reverse_diffusion', num_steps=10), sde_lib.VPSDE(),
     'too few for the discrete chain'),
    (dict(method='dpm_solver', num_steps=-3), VE, 'num_steps must be >= 1'),
    (dict(method='dpm_solver', order=4, num_steps=5), VE, r'order must be one of \[1, 2, 3\]'),
    (dict(method='heun', time_schedule='cosine', num_steps=5), VE, 'valid: .*logsnr'),
    (dict(method='pc', time_schedule='edm'), VE, 'not available for method'),
])
def test_bad_input_names_the_valid_choices(fields, sde, match):
  with pytest.raises(ValueError, match=match):
    sampling.get_sampler(_config(**fields), sde, (4, 2))


@pytest.mark.parametrize('name', ['vp', 'subvp', 've'])
def test_time_grid_inverts_sigma(name):
  sde = {'vp': sde_lib.VPSDE(), 'subvp': sde_lib.SubVPSDE(), 've': VE}[name]
  for schedule in schedules.TIME_SCHEDULES:
    ts = schedules.get_time_grid(schedule, sde, 12, 1e-3)
    assert ts[0] == sde.T and ts[-1] == 1e-3 and np.all(np.diff(ts) < 0)
  sig = schedules.scaled_sigma(sde, np.array([0.3, 0.7]))
  np.testing.assert_allclose(schedules.time_of_sigma(sde, sig), [0.3, 0.7], rtol=1e-5)
  lam = -np.log(schedules.scaled_sigma(sde, schedules.get_time_grid('logsnr', sde, 9, 1e-3)))
  np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-4)


def test_dpm_solver_converges_at_its_order():
  """1-D Gaussian data N(0, c^2) under VE: the flow is y(sigma) = y_T sqrt((c^2 + sigma^2) /
  (c^2 + sigma_T^2)). Global error of DPM-Solver++(k)M ~ (1/N)^k for k = 1, 2; for k = 3 the
  first-order warm-up step caps the global order at 2, but its error must be well below 2M's."""
  c = 0.5
  gauss = toy.GaussianMixture(np.zeros((1, 1), np.float32), np.full((1, 1), c, np.float32),
                              np.ones((1,), np.float32))
  sde = sde_lib.VESDE(sigma_min=0.05, sigma_max=3.0)
  sig_T, sig_0 = schedules.scaled_sigma(sde, np.array([1.0, 1e-3]))
  x_T = sde.prior_sampling(jax.random.PRNGKey(0), (256, 1))
  want = np.asarray(x_T) * np.sqrt((c**2 + sig_0**2) / (c**2 + sig_T**2))

  def error(order, n):
    sampler = solvers.get_dpm_solver_sampler(sde, (256, 1), num_steps=n, order=order)
    # The sampler draws x_T from the same key as above: same starting points.
    x, _ = jax.jit(lambda rng: sampler(rng, gauss.score_fn(sde)))(jax.random.PRNGKey(0))
    return np.abs(np.asarray(x) - want).max()
  errors = {k: (error(k, 24), error(k, 48)) for k in (1, 2, 3)}
  rates = {k: np.log2(e[0] / e[1]) for k, e in errors.items()}
  assert 0.8 < rates[1] < 1.3 and 1.7 < rates[2] < 2.4 and rates[3] > 1.7, rates
  assert errors[3][1] < 0.3 * errors[2][1] < 0.3 * errors[1][1], errors


def test_pc_step_can_be_wrapped_without_a_new_loop():
  """Inpainting-style hook: the wrapper pins coordinate 0 after every update."""
  def pin_first_coordinate(step):
    def wrapped(rng, x, t, score_fn):
      x, x_mean = step(rng, x, t, score_fn)
      return x.at[:, 0].set(0.8), x_mean.at[:, 0].set(0.8)
    return wrapped

  from score_sde.sampling import pc
  sampler = pc.get_pc_sampler(VE, (256, 2), num_steps=50, wrap_step=pin_first_coordinate)
  samples, nfe = jax.jit(lambda rng: sampler(rng, GMM.score_fn(VE)))(jax.random.PRNGKey(0))
  samples = np.asarray(samples)
  assert int(nfe) == 50
  np.testing.assert_array_equal(samples[:, 0], np.float32(0.8))
  # Given x_0 = 0.8 only the mode at (0.8, 0) is likely: the free coordinate collapses onto it.
  assert np.abs(np.median(samples[:, 1])) < 0.1


@pytest.mark.parametrize('method', sorted(sampling.METHODS))
def test_sampler_keys_lists_every_key_a_method_reads(method):
  """METHODS[method].keys backs sample.py's "has no effect" error: every sampling key it leaves
  out for ``method`` is replaced by a value no code could use, and the sampler still builds and
  traces. (A method that reads what the model was trained for, few_step, gets a consistency
  model's objective.)"""
  import ml_collections
  fields = _config(method=method, num_steps=4).sampling.to_dict()
  keep = set(sampling.METHODS[method].keys) | set(sampling.EVERY_METHOD)
  poisoned = {k: (v if k in keep else object()) for k, v in fields.items()}
  trained = {k: 'ct' for k in sampling.METHODS[method].training_keys}
  config = ml_collections.ConfigDict({'sampling': poisoned, 'training': trained},
                                     type_safe=False)
  sampler = sampling.get_sampler(config, VE, (8, 2))
  out = jax.eval_shape(lambda rng: sampler(rng, GMM.score_fn(VE)), jax.random.PRNGKey(0))
  assert out[0].shape == (8, 2)
