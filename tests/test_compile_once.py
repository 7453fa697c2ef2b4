"""The README's calls compile once: samplers and likelihood_fn, called with no user jit, trace
score_fn only on the first call with a given score_fn and shape, and the cache lets go of it.

(diffrax's own ``filter_jit`` cache keeps the ODE's vector field, hence score_fn, for the ODE
sampler and likelihood; that cache is diffrax's, bounded by JAX's LRU size.)"""
import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default_toy
from score_sde import likelihood, sampling, sde_lib
from score_sde.compile_once import compile_once
from score_sde.datasets import toy

GMM = toy.gaussian_mixture()
VE = sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0, N=1000)
METHODS = [
    dict(method='pc', predictor='reverse_diffusion', corrector='langevin', num_steps=3),
    dict(method='ode', rtol=1e-2, atol=1e-2),
    dict(method='dpm_solver', order=2, num_steps=3),
    dict(method='ddim', num_steps=3),
    dict(method='heun', num_steps=3),
]


def _counting(score_fn):
  """score_fn plus a count of its Python calls: each is one trace of it, never a run."""
  traces = []

  def counted(x, t):
    traces.append(1)
    return score_fn(x, t)
  return counted, traces


@pytest.mark.parametrize('fields', METHODS, ids=lambda f: f['method'])
def test_sampler_called_plainly_traces_score_fn_once(fields):
  config = default_toy.get_config()
  config.sampling.update(fields)
  sampler = sampling.get_sampler(config, VE, (4, 2))
  score_fn, traces = _counting(GMM.score_fn(VE))
  first, _ = sampler(jax.random.PRNGKey(0), score_fn)
  after_first = len(traces)
  again, nfe = sampler(jax.random.PRNGKey(0), score_fn)
  sampler(jax.random.PRNGKey(1), score_fn)
  assert after_first > 0 and len(traces) == after_first
  np.testing.assert_array_equal(first, again)
  assert first.shape == (4, 2) and int(nfe) > 0 and sampler.cache_size() == 1
  if fields['method'] != 'ode':   # diffrax's own filter_jit cache keeps its vector field
    del score_fn
    gc.collect()
    assert sampler.cache_size() == 0   # the cache holds score_fn weakly


def test_likelihood_called_plainly_compiles_once_per_shape():
  fn = likelihood.get_likelihood_fn(VE, hutchinson_type='rademacher', rtol=1e-3, atol=1e-3)
  score_fn, traces = _counting(GMM.score_fn(VE))
  x = GMM.sample(jax.random.PRNGKey(0), 6)
  logp, _, _ = fn(jax.random.PRNGKey(1), score_fn, x)
  after_first = len(traces)
  logp_again, _, _ = fn(jax.random.PRNGKey(2), score_fn, x + 0.1)
  assert after_first > 0 and len(traces) == after_first
  assert logp.shape == logp_again.shape == (6,) and not np.allclose(logp, logp_again)
  # A new batch size is a new shape: one more compilation, then reuse.
  fn(jax.random.PRNGKey(1), score_fn, x[:3])
  after_new_shape = len(traces)
  fn(jax.random.PRNGKey(1), score_fn, x[3:])
  assert after_new_shape > after_first and len(traces) == after_new_shape
  assert fn.cache_size() == 1


def test_inside_a_user_trace_the_solve_runs_inline_and_caches_nothing():
  traces = []

  def solve(rng, score_fn, x):
    traces.append(1)
    return score_fn(x, 0.0) + jax.random.normal(rng, x.shape)

  once = compile_once(solve)
  x = jnp.ones((3, 2))
  # A score_fn built afresh inside each trace, as generation.py does under pmap.
  run = jax.jit(lambda rng, w: once(rng, lambda y, t: w * y, x))
  for w in (1.0, 2.0):
    run(jax.random.PRNGKey(0), w)
  assert len(traces) == 1 and once.cache_size() == 0
  # Bound methods are new objects per attribute access, yet compare equal: one entry.
  score = GMM.score_fn(VE)

  class Model:
    def score(self, y, t):
      return score(y, jnp.full(y.shape[:1], 0.5))
  model = Model()
  for _ in range(2):
    once(jax.random.PRNGKey(0), model.score, x)
  assert len(traces) == 2 and once.cache_size() == 1
  del model
  gc.collect()
  assert once.cache_size() == 0
