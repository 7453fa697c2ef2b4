"""Post-hoc EMA snapshots on disk (score_sde/posthoc_snapshots.py): orbax round trip, rebuilding
from a workdir, the cached parameter file, and the one-line errors."""
import numpy as np
import pytest

from score_sde import posthoc_ema, posthoc_snapshots
from score_sde.errors import ConfigError, MissingFileError

RELS = (0.05, 0.10)


def _tree(step, j):
  return {'dense': {'kernel': np.full((2, 3), step + 0.5 * j, np.float32),
                    'bias': np.arange(3, dtype=np.float32) * step}}


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run'))
  writer = posthoc_snapshots.SnapshotWriter(path, RELS)
  for step in (10, 20, 30):
    writer.save(step, [_tree(step, j) for j in range(len(RELS))])
  writer.save(30, [_tree(-1, j) for j in range(len(RELS))])   # a replayed step is not rewritten
  writer.close()
  return path


def test_profiles_and_a_stored_length_round_trip(workdir):
  assert posthoc_snapshots.list_profiles(workdir) == [(s, list(RELS)) for s in (10, 20, 30)]
  for step in (20, 30):
    params, got_step, residual = posthoc_snapshots.reconstruct_params(workdir, 0.10, _tree(0, 0),
                                                                      step)
    assert got_step == step and residual < 1e-6
    np.testing.assert_allclose(params['dense']['kernel'], _tree(step, 1)['dense']['kernel'],
                               atol=1e-5)
    np.testing.assert_allclose(params['dense']['bias'], _tree(step, 1)['dense']['bias'], atol=1e-5)


def test_rebuilt_length_is_written_once_and_read_back(workdir):
  params, step = posthoc_snapshots.load_or_reconstruct(workdir, 0.08, _tree(0, 0))
  assert step == 30
  with open(posthoc_snapshots.params_path(workdir, 0.08, 30), 'rb'):
    pass
  again, _ = posthoc_snapshots.load_or_reconstruct(workdir, 0.08, _tree(0, 0))
  np.testing.assert_array_equal(again['dense']['kernel'], params['dense']['kernel'])
  # Snapshot (step, j) holds the constant kernel step + j / 2: the result is the plan's sum.
  weights, _, _ = posthoc_ema.plan(posthoc_snapshots.list_profiles(workdir), 0.08)
  expected = sum(c * (s + 0.5 * j) for s, j, c in weights)
  np.testing.assert_allclose(params['dense']['kernel'], np.full((2, 3), expected), rtol=1e-6)


def test_bad_input_is_one_line(workdir, tmp_path):
  with pytest.raises(ConfigError, match='this run stored none'):
    posthoc_snapshots.reconstruct_params(str(tmp_path), 0.1)
  with pytest.raises(MissingFileError, match='does not exist'):
    posthoc_snapshots.reconstruct_params(str(tmp_path / 'nowhere'), 0.1)
  with pytest.raises(ConfigError, match='cannot be rebuilt'):
    posthoc_snapshots.reconstruct_params(workdir, 0.01)
