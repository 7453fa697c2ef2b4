"""The package's shape: its import graph read from the source (no cycle; the low floors never
import the training loop), and extension from outside the package: a sampler method and a VPSDE
subclass registered by a user run through sample.py's path and the experiment runner."""
import ast
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from configs import default_toy
from score_sde import experiments, generation, models, sampling, sde_lib
from score_sde.models import utils as mutils

PACKAGE = os.path.join(helpers.ROOT, 'score_sde')
# Nothing here may reach the training loop, directly or through another module.
BELOW_TRAINING = ('score_sde.config_checks', 'score_sde.sampling', 'score_sde.evaluation',
                  'score_sde.checkpointing', 'score_sde.generation', 'score_sde.train_state')


def _modules() -> dict[str, str]:
  """Dotted module name -> file, for every module of the package."""
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        rel = os.path.relpath(os.path.join(root, name), helpers.ROOT)[:-3].split(os.sep)
        found['.'.join(rel[:-1] if rel[-1] == '__init__' else rel)] = os.path.join(root, name)
  return found


def import_graph() -> dict[str, set[str]]:
  """Module -> the package modules it imports anywhere in its source (lazy imports included)."""
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    edges = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        edges.update(a.name for a in node.names if a.name in modules)
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        for a in node.names:
          child = f'{node.module}.{a.name}'
          edges.add(child if child in modules else node.module)
    graph[module] = {e for e in edges if e in modules and e != module}
  return graph


def _reachable(graph, start) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in graph[todo.pop()]:
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_import_graph_has_no_cycle_and_low_modules_never_reach_training():
  graph = import_graph()
  assert 'score_sde.training' in graph and 'score_sde.sampling.guidance' in graph
  # A package's __init__ may import its own submodules; any other way back is a cycle.
  cycles = sorted(m for m in graph if m in _reachable(
      {k: {e for e in v if not k.startswith(e + '.')} for k, v in graph.items()}, m))
  assert cycles == []
  low = [m for m in graph if m.startswith(BELOW_TRAINING)]
  reaching = {m: 'score_sde.training' in _reachable(graph, m) for m in low}
  assert low and not any(reaching.values()), [m for m, r in reaching.items() if r]


# --- extending from outside the package ---------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScaledVPSDE(sde_lib.VPSDE):
  """A user's SDE: VP with the prior scaled down (it inherits VP's noise conditioning)."""
  prior_scale: float = 0.5

  def prior_sampling(self, rng, shape):
    return self.prior_scale * jax.random.normal(rng, shape)


def _halving_build(cfg, sde, shape):
  """A toy sampler: prior draw, then num_steps steps x <- x + score(x, T) / 2 (one NFE each)."""
  def sampler(rng, score_fn):
    x = sde.prior_sampling(rng, shape)
    t = jnp.full((shape[0],), sde.T)
    x = jax.lax.fori_loop(0, cfg.num_steps, lambda i, x: x + 0.5 * score_fn(x, t), x)
    return x, jnp.asarray(cfg.num_steps, jnp.int32)
  return sampler


@pytest.fixture
def registered(monkeypatch):
  monkeypatch.setitem(sampling.METHODS, 'halving', sampling.Method(
      _halving_build, keys=('num_steps',), nfe_per_step=lambda cfg: 1))
  monkeypatch.setitem(sde_lib.SDES, 'scaled_vp', ScaledVPSDE)


def _config():
  config = default_toy.get_config()
  config.model.nf, config.model.num_layers = 8, 1
  config.sampling.method, config.sampling.num_steps, config.sampling.batch_size = 'halving', 3, 16
  return config


def test_a_sampler_and_an_sde_registered_outside_run_through_sample_py_path(registered):
  config = _config()
  sde = ScaledVPSDE()
  model = models.get_model(config)
  params = jax.jit(lambda: mutils.init_params(jax.random.PRNGKey(0), model, (2,)))()
  sample_fn = generation.get_sample_fn(config, sde, model)
  samples, _, nfe = generation.draw(sample_fn, params, jax.random.PRNGKey(0), 24)
  assert samples.shape == (24, 2) and nfe == 3 and np.isfinite(samples).all()
  # The same draw with the network's score written out by hand: nothing else touched x.
  score_fn = mutils.get_score_fn(sde, model, params)
  x = _halving_build(config.sampling, sde, (2, 2))(jax.random.PRNGKey(5), score_fn)[0]
  assert np.isfinite(np.asarray(x)).all()
  config.sampling.snr = 0.3
  from score_sde import config_checks
  with pytest.raises(Exception, match="halving', which reads num_steps"):
    config_checks.check_sampling_overrides(config, ['sampling.snr'])


def test_the_experiment_runner_plans_and_runs_them(registered, tmp_path):
  import ml_collections
  spec = ml_collections.ConfigDict()
  spec.base = _config()
  spec.base.training.n_iters = 2
  spec.base.training.batch_size = 16
  spec.base.training.snapshot_freq = spec.base.training.snapshot_freq_for_preemption = 2
  spec.base.training.log_freq = spec.base.training.eval_freq = 2
  spec.base.training.sde = 'scaled_vp'
  spec.base.eval.batch_size = 16
  spec.train_axes = {'training': {'sde': ['scaled_vp']}}
  spec.samplers = {'halving': {'method': 'halving'}}
  spec.nfe = [2, 4]
  spec.seeds = [0]
  spec.seed_scope = 'sampling'
  spec.metrics = ['mmd']
  spec.metric_options = {'mmd_bandwidth': 1.0}
  spec.num_samples = 16
  spec.plot_columns = None
  _, cells = experiments.plan(spec)
  assert [dict(c.settings)['num_steps'] for c in cells] == [2, 4]   # NFE per step from METHODS
  rows = experiments.run(spec, str(tmp_path))
  assert [r['nfe'] for r in rows] == [2, 4] and rows[0]['sde'] == 'scaled_vp'
