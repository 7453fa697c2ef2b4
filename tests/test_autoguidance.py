"""Autoguidance: score + w (score - guide's score) through every entry point's draw loop.

Two tiny toy runs (the model, and a guide with a smaller network) check the plumbing exactly:
w = -1 gives the guide's score, so the draw equals sampling the guide run itself (the two
parameter sets reach the right networks); a guide that is the model itself changes nothing at
any w. Bad input stops in one line before any work.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import helpers
import score_sde
from score_sde import config_checks, sde_lib, training
from score_sde.checkpointing import identity
from score_sde.errors import ConfigError, MissingFileError
from score_sde.sampling import autoguidance

SAMPLER = dict(method='dpm_solver', order=2, num_steps=6, show_progress=False)


def _config(nf: int = 32):
  config = helpers.tiny_toy_config()
  config.model.nf = nf
  config.sampling.batch_size = 64
  t = config.training
  t.n_iters, t.snapshot_freq, t.snapshot_freq_for_preemption, t.eval_freq = 4, 4, 4, 100
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  model_dir, guide_dir = (str(tmp_path_factory.mktemp(n)) for n in ('model', 'guide'))
  training.train_and_evaluate(_config(32), model_dir)
  training.train_and_evaluate(_config(16), guide_dir)
  return model_dir, guide_dir


def test_autoguided_score_is_the_extrapolation_of_the_two():
  """And with an interval: guided inside it, the model's own score outside (VP: sigma(t) =
  sqrt(exp(int beta) - 1) grows with t)."""
  s, g = (lambda x, t: -x / 2.0), (lambda x, t: -x / 3.0)
  x = jnp.arange(6.0).reshape(3, 2)
  sde = sde_lib.VPSDE()
  both = -x * (1.5 / 2.0 - 0.5 / 3.0)
  np.testing.assert_allclose(autoguidance.autoguided_score_fn(s, g, sde, 0.5)(x, jnp.ones(3)),
                             both, rtol=1e-6)
  for t, expected in ((0.05, both), (0.9, -x / 2.0)):   # sigma(0.05) ~ 0.17, sigma(0.9) ~ 59
    out = autoguidance.autoguided_score_fn(s, g, sde, 0.5, sigma_max=2.0)(x, jnp.full(3, t))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_scale_minus_one_draws_the_guide_and_a_self_guide_changes_nothing(runs):
  model_dir, guide_dir = runs
  model, guide = score_sde.load(model_dir), score_sde.load(guide_dir)
  plain = model.sample(64, **SAMPLER).images
  as_guide = model.sample(64, autoguidance_workdir=guide_dir, autoguidance_scale=-1.0,
                          **SAMPLER).images
  np.testing.assert_allclose(as_guide, guide.sample(64, **SAMPLER).images, atol=1e-5)
  assert np.abs(as_guide - plain).max() > 1e-2   # the two networks differ
  itself = model.sample(64, autoguidance_workdir=model_dir, autoguidance_scale=0.7,
                        **SAMPLER).images
  np.testing.assert_allclose(itself, plain, atol=1e-5)


def _fails(config, error, match):
  with pytest.raises(error, match=match) as info:
    config_checks.check(config, 'sample')
  assert '\n' not in str(info.value)


def _stored(config, path):
  path.mkdir()
  identity.write_config_json(config, str(path), has_checkpoint=False)
  return str(path)


def test_bad_guides_stop_in_one_line(tmp_path):
  config = _config()
  config.sampling.autoguidance_scale = 0.5
  _fails(config, ConfigError, r'autoguidance_scale=0.5 needs a guide: set '
                              r'sampling.autoguidance_workdir')
  config.sampling.autoguidance_workdir = str(tmp_path / 'missing')
  _fails(config, MissingFileError, 'autoguidance_workdir .*missing does not exist')
  other_sde = _config()
  other_sde.training.sde = 'vesde'
  other_shape = _config()
  other_shape.data.dim = 3
  few_step = _config()
  few_step.training.objective = 'ct'
  cases = [(other_sde, r'The guide .* was trained with VESDE\(.*this run has VPSDE\('),
           (other_shape, r'data of shape \(3,\); this run has \(2,\)'),
           (few_step, "The guide .* is a few-step model .*'ct'")]
  for i, (guide, match) in enumerate(cases):
    config.sampling.autoguidance_workdir = _stored(guide, tmp_path / str(i))
    _fails(config, ConfigError, match)
  config.sampling.autoguidance_workdir = str(tmp_path / '0')
  config.training.objective = 'ct'
  with pytest.raises(ConfigError, match='guides a score model; this is a few-step model'):
    autoguidance.check(config)
  config.training.objective = None
  config.sampling.autoguidance_sigma_min = 3.0
  config.sampling.autoguidance_sigma_max = 2.0
  _fails(config, ConfigError, 'must satisfy 0 <= sigma_min < sigma_max')
