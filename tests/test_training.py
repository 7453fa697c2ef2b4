"""Training: multi-device parity, kill-and-resume, atomic checkpoints, NaN stop, bad input."""
import os
import signal
import struct

import jax
import numpy as np
import pytest

from configs import default_toy
from score_sde import checkpointing, datasets, models, parallel, sde_lib, training


def tiny_config(**training_overrides):
  config = default_toy.get_config()
  config.model.nf = 32
  config.model.num_layers = 2
  config.training.batch_size = 64
  config.training.n_iters = 12
  config.training.log_freq = 4
  config.training.eval_freq = 6
  config.training.snapshot_freq = 8
  config.training.snapshot_freq_for_preemption = 4
  config.training.snapshot_sampling = False
  config.optim.warmup = 2
  for k, v in training_overrides.items():
    setattr(config.training, k, v)
  return config


def assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_pmapped_step_equals_single_device_step():
  assert jax.local_device_count() == 8
  config = tiny_config()
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  optimizer = training.get_optimizer(config.optim)
  state = training.init_train_state(config, model, optimizer, jax.random.PRNGKey(0))
  step_fn, _ = training.get_step_fns(config, sde, model, optimizer)
  x = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
  rng = jax.random.PRNGKey(2)

  single_state, single_metrics = jax.jit(step_fn)(state, {'image': x}, rng)
  p_step = parallel.pmap_step(step_fn)
  p_state, p_metrics = p_step(parallel.replicate(state), {'image': parallel.shard(x, 8)}, rng)
  multi_state = parallel.unreplicate(p_state)

  assert int(multi_state.step) == int(single_state.step) == 1
  np.testing.assert_allclose(p_metrics['loss'][0], single_metrics['loss'], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               multi_state.params, single_state.params)
  # Every device holds the same replica after the pmean of the gradients.
  jax.tree.map(lambda a: np.testing.assert_array_equal(a[0], a[-1]), p_state.params)


def _steps_then_signal(monkeypatch, at_batch):
  """Makes the data iterator deliver SIGTERM to this process when batch ``at_batch`` is drawn."""
  original = datasets.ToyIterator.__next__

  def next_with_signal(self):
    if self.step + 1 == at_batch:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self)
  monkeypatch.setattr(datasets.ToyIterator, '__next__', next_with_signal)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """12 uninterrupted steps of the tiny config: the reference for the resume tests."""
  state = training.train_and_evaluate(tiny_config(), str(tmp_path_factory.mktemp('straight')))
  assert int(state.step) == 12
  return state


def test_kill_and_resume_equals_uninterrupted_training(tmp_path, monkeypatch, straight):
  config = tiny_config()

  workdir = str(tmp_path / 'resumed')
  with monkeypatch.context() as m:
    _steps_then_signal(m, at_batch=6)
    stopped = training.train_and_evaluate(config, workdir)
  assert int(stopped.step) == 6
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  assert ckpt.latest_step() == 6 and ckpt.all_steps() == [6]   # step 4 pruned: only latest kept

  # A half-written checkpoint (orbax's temporary directory) must never be restored.
  partial = os.path.join(checkpointing.checkpoint_dir(workdir), '10.orbax-checkpoint-tmp-1')
  os.makedirs(os.path.join(partial, 'state'))
  with open(os.path.join(partial, 'state', 'junk'), 'w') as f:
    f.write('half written')
  assert ckpt.latest_step() == 6

  resumed = training.train_and_evaluate(config, workdir)
  assert int(resumed.step) == 12
  assert_trees_equal(resumed, straight)       # params, EMA, optimizer state and step
  steps = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                     read_only=True).all_steps()
  assert steps == [8, 12]                     # snapshot_freq=8 kept forever, plus the latest


def test_training_further_continues_from_the_last_step(tmp_path, straight):
  config = tiny_config(n_iters=8)
  first = training.train_and_evaluate(config, str(tmp_path))
  config.training.n_iters = 12
  again = training.train_and_evaluate(config, str(tmp_path))
  assert int(first.step) == 8 and int(again.step) == 12
  assert_trees_equal(again, straight)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  original = datasets.ToyIterator.__next__

  def poisoned(self):
    batch = original(self)
    if self.step >= 7:
      batch['image'] = np.full_like(batch['image'], np.nan)
    return batch
  monkeypatch.setattr(datasets.ToyIterator, '__next__', poisoned)
  with pytest.raises(training.NonFiniteLossError, match='last good checkpoint'):
    training.train_and_evaluate(tiny_config(), str(tmp_path))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)), read_only=True)
  assert ckpt.latest_step() == 4
  config = tiny_config()
  template = training.init_train_state(config, models.get_model(config),
                                       training.get_optimizer(config.optim), jax.random.PRNGKey(0))
  state, data_state = ckpt.restore(template)
  assert int(state.step) == 4 and data_state == {'train': {'step': 4}}
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(state.params))


def test_corrupt_and_missing_checkpoints_raise_clear_errors(tmp_path):
  config = tiny_config(n_iters=4)
  template = training.init_train_state(config, models.get_model(config),
                                       training.get_optimizer(config.optim), jax.random.PRNGKey(0))
  empty = checkpointing.Checkpointer(str(tmp_path / 'empty'))
  with pytest.raises(checkpointing.CheckpointError, match='No complete checkpoint in'):
    empty.restore(template)

  training.train_and_evaluate(config, str(tmp_path / 'run'))
  directory = checkpointing.checkpoint_dir(str(tmp_path / 'run'))
  ckpt = checkpointing.Checkpointer(directory, read_only=True)
  with pytest.raises(checkpointing.CheckpointError, match=r'No checkpoint for step 3.*\[4\]'):
    ckpt.restore(template, step=3)
  for root, _, files in os.walk(os.path.join(directory, '4', 'state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00garbage')
  with pytest.raises(checkpointing.CheckpointError, match='could not be restored'):
    ckpt.restore(template)

  wider = tiny_config()
  wider.model.nf = 48
  wider_template = training.init_train_state(wider, models.get_model(wider),
                                             training.get_optimizer(wider.optim),
                                             jax.random.PRNGKey(0))
  training.train_and_evaluate(tiny_config(n_iters=4), str(tmp_path / 'run2'))
  with pytest.raises(checkpointing.CheckpointError, match='config it was trained with'):
    checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path / 'run2')),
                               read_only=True).restore(wider_template)


@pytest.mark.parametrize('field,value,match', [
    ('training.sde', 'bridge',
     r"Unknown SDE 'bridge'; valid: \['edm', 'rectified_flow', 'subvpsde', 'vesde', 'vpsde'\]"),
    ('model.name', 'unet9000', r"Unknown model 'unet9000'; valid: \[.*'mlp'"),
    ('data.dataset', 'imagenet9', r"Unknown dataset 'imagenet9'; valid: \[.*'spiral'"),
    ('training.batch_size', 60, 'not divisible by the number of devices'),
    ('optim.optimizer', 'SGD', r"Unknown optimizer 'SGD'; valid: \['Adam'\]"),
])
def test_bad_config_values_fail_before_training(tmp_path, field, value, match):
  config = tiny_config()
  section, key = field.split('.')
  setattr(config[section], key, value)
  with pytest.raises(ValueError, match=match):
    training.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))


def test_config_typo_is_rejected_with_a_suggestion():
  config = default_toy.get_config()
  with pytest.raises(AttributeError, match='Did you mean "n_iters"'):
    config.training.n_iter = 5


def _read_scalar_tags(logdir):
  """Tags of the scalars in TensorBoard event files (TFRecord framing, Event protos)."""
  from tensorboardX.proto import event_pb2
  tags = set()
  for name in os.listdir(logdir):
    with open(os.path.join(logdir, name), 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_training_writes_tensorboard_scalars(tmp_path):
  training.train_and_evaluate(tiny_config(), str(tmp_path))
  tags = _read_scalar_tags(os.path.join(tmp_path, 'tensorboard'))
  assert {'train/loss', 'train/grad_norm', 'train/steps_per_sec', 'eval/loss'} <= tags
