"""Paper-format checkpoints (msgpack of the paper code's `State`) load into our models."""
from __future__ import annotations

import copy
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.tiny import ncsnpp as tiny_ncsnpp
from score_sde.checkpointing import paper
from score_sde import models


def _write_paper_state(path, params, ema_params, step=7):
  """The paper's `flax.training.checkpoints.save_checkpoint` payload, written by hand."""
  to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)
  adam = jax.tree_util.tree_map(lambda a: {'grad_ema': np.zeros_like(a),
                                           'grad_sq_ema': np.zeros_like(a)}, to_np(params))
  state = {
      'step': step,
      'optimizer': {'target': to_np(params), 'state': {'step': step, 'param_states': adam}},
      'lr': 2e-4,
      'model_state': {},
      'ema_rate': 0.999,
      'params_ema': to_np(ema_params),
      'rng': np.array([0, 42], np.uint32),
  }
  with open(path, 'wb') as f:
    f.write(flax.serialization.msgpack_serialize(state))


@pytest.fixture(scope='module')
def tiny():
  config = tiny_ncsnpp.get_config()
  model = models.get_model(config)
  s = config.data.image_size
  x = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, jnp.ones((1,))), x)
  leaves, treedef = jax.tree_util.tree_flatten(shapes['params'])
  params = jax.tree_util.tree_unflatten(
      treedef, [np.random.RandomState(i).randn(*l.shape).astype(np.float32)
                for i, l in enumerate(leaves)])
  ema = jax.tree_util.tree_map(lambda a: a + 1.0, params)
  return config, model, params, ema


def _assert_trees_equal(a, b):
  fa, fb = flax.traverse_util.flatten_dict(a), flax.traverse_util.flatten_dict(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def test_round_trip_gives_the_same_arrays(tiny, tmp_path):
  config, model, params, ema = tiny
  _write_paper_state(tmp_path / 'checkpoint_7', params, ema)
  loaded = paper.load_paper_checkpoint(str(tmp_path / 'checkpoint_7'), config)
  _assert_trees_equal(loaded.params, params)
  _assert_trees_equal(loaded.ema_params, ema)
  assert loaded.step == 7


def test_directory_picks_the_latest_checkpoint(tiny, tmp_path):
  config, _, params, ema = tiny
  _write_paper_state(tmp_path / 'checkpoint_2', params, params, step=2)
  _write_paper_state(tmp_path / 'checkpoint_10', params, ema, step=10)
  loaded = paper.load_paper_checkpoint(str(tmp_path), config)
  assert loaded.step == 10
  _assert_trees_equal(loaded.ema_params, ema)


def test_mismatches_name_the_first_differing_path(tiny, tmp_path):
  config, _, params, ema = tiny
  bad = copy.deepcopy(jax.tree_util.tree_map(np.asarray, ema))
  bad['Conv_0']['kernel'] = np.zeros((3, 3, 3, 5), np.float32)
  _write_paper_state(tmp_path / 'shape', params, bad)
  with pytest.raises(ValueError, match=r"params_ema.*'Conv_0/kernel' has shape \(3, 3, 3, 5\)"):
    paper.load_paper_checkpoint(str(tmp_path / 'shape'), config)

  missing = copy.deepcopy(jax.tree_util.tree_map(np.asarray, params))
  del missing['Dense_1']
  _write_paper_state(tmp_path / 'missing', missing, ema)
  with pytest.raises(ValueError, match=r"optimizer.target.*'Dense_1/bias'.*missing"):
    paper.load_paper_checkpoint(str(tmp_path / 'missing'), config)

  # A checkpoint of a different architecture (more channels) is refused, not half-loaded.
  config = tiny_ncsnpp.get_config()
  config.model.nf = 16
  _write_paper_state(tmp_path / 'other', params, ema)
  with pytest.raises(ValueError, match='shape'):
    paper.load_paper_checkpoint(str(tmp_path / 'other'), config)


def test_not_a_paper_checkpoint(tiny, tmp_path):
  config = tiny[0]
  with open(tmp_path / 'x', 'wb') as f:
    f.write(flax.serialization.msgpack_serialize({'params': {}}))
  with pytest.raises(ValueError, match='not a paper-format checkpoint'):
    paper.load_paper_checkpoint(str(tmp_path / 'x'), config)
  with pytest.raises(FileNotFoundError):
    paper.load_paper_checkpoint(os.path.join(tmp_path, 'absent'), config)
  with pytest.raises(FileNotFoundError, match='checkpoint_<n>'):
    paper.load_paper_checkpoint(str(tmp_path), config)
