"""Post-hoc EMA snapshots on disk (score_sde/checkpointing/posthoc.py): orbax round trip, rebuilding
from a workdir, the cached parameter file, and the one-line errors."""
import jax
import numpy as np
import pytest

from score_sde import posthoc_ema
from score_sde.checkpointing import posthoc
from score_sde.errors import ConfigError, MissingFileError

RELS = (0.05, 0.10)


def _tree(step, j):
  return {'dense': {'kernel': np.full((2, 3), step + 0.5 * j, np.float32),
                    'bias': np.arange(3, dtype=np.float32) * step}}


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run'))
  writer = posthoc.SnapshotWriter(path, RELS, 10)
  for step in (10, 20, 30):
    writer.save(step, [_tree(step, j) for j in range(len(RELS))])
  writer.save(30, [_tree(-1, j) for j in range(len(RELS))])   # a replayed step is not rewritten
  writer.close()
  return path


def test_profiles_and_a_stored_length_round_trip(workdir):
  assert posthoc.list_profiles(workdir) == [(s, list(RELS)) for s in (10, 20, 30)]
  for step in (20, 30):
    params, got_step, residual = posthoc.reconstruct_params(workdir, 0.10, _tree(0, 0),
                                                                      step)
    assert got_step == step and residual < 1e-6
    np.testing.assert_allclose(params['dense']['kernel'], _tree(step, 1)['dense']['kernel'],
                               atol=1e-5)
    np.testing.assert_allclose(params['dense']['bias'], _tree(step, 1)['dense']['bias'], atol=1e-5)


def test_rebuilt_length_is_written_once_and_read_back(workdir):
  params, step = posthoc.load_or_reconstruct(workdir, 0.08, _tree(0, 0))
  assert step == 30
  with open(posthoc.params_path(workdir, 0.08, 30), 'rb'):
    pass
  again, _ = posthoc.load_or_reconstruct(workdir, 0.08, _tree(0, 0))
  np.testing.assert_array_equal(again['dense']['kernel'], params['dense']['kernel'])
  # Snapshot (step, j) holds the constant kernel step + j / 2: the result is the plan's sum.
  weights, _, _ = posthoc_ema.plan(posthoc.list_profiles(workdir), 0.08)
  expected = sum(c * (s + 0.5 * j) for s, j, c in weights)
  np.testing.assert_allclose(params['dense']['kernel'], np.full((2, 3), expected), rtol=1e-6)


def test_bad_input_is_one_line(workdir, tmp_path):
  with pytest.raises(ConfigError, match='this run stored none'):
    posthoc.reconstruct_params(str(tmp_path), 0.1)
  with pytest.raises(MissingFileError, match='does not exist'):
    posthoc.reconstruct_params(str(tmp_path / 'nowhere'), 0.1)
  with pytest.raises(ConfigError, match='cannot be rebuilt'):
    posthoc.reconstruct_params(workdir, 0.01)


def test_training_stores_power_emas_and_snapshots(tmp_path):
  """The tiny toy run with two power EMAs, 6 steps then 6 more: the checkpoint holds the power
  EMAs (so the generic loop resumes them exactly, as tests/test_training.py checks for every
  field), snapshots are taken every 4th step and at each run's end, and a stored length rebuilt
  from them is the tracked EMA."""
  import helpers
  from score_sde import checkpointing, train_state, training
  workdir = str(tmp_path)
  config = helpers.tiny_toy_config(posthoc_ema_sigma_rels=RELS, posthoc_ema_snapshot_freq=4,
                                   n_iters=6)
  first = training.train_and_evaluate(config, workdir)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  restored, _ = ckpt.restore(train_state.restore_template(config), 6)
  ckpt.close()
  helpers.assert_trees_equal(restored.power_ema_params, first.power_ema_params)
  config.training.n_iters = 12
  final = training.train_and_evaluate(config, workdir)
  assert len(final.power_ema_params) == 2
  assert not np.allclose(jax.tree.leaves(final.power_ema_params[0])[0],
                         jax.tree.leaves(final.ema_params)[0])
  assert [s for s, _ in posthoc.list_profiles(workdir)] == [4, 6, 8, 12]
  rebuilt, step, _ = posthoc.reconstruct_params(workdir, 0.10, final.params)
  assert step == 12
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), rebuilt,
               jax.device_get(final.power_ema_params[1]))
  # score_sde.load reads the post-hoc EMA that sampling.ema_sigma_rel names, as sample.py does.
  import score_sde
  config.sampling.ema_sigma_rel = 0.10
  run = score_sde.load(workdir, config=config)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), run.params,
               jax.device_get(final.power_ema_params[1]))
  assert not np.allclose(jax.tree.leaves(score_sde.load(workdir).params)[0],
                         jax.tree.leaves(run.params)[0])
