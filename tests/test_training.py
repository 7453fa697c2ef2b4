"""Training: multi-device parity, kill-and-resume, atomic checkpoints, NaN stop, bad input."""
import os
import signal
import struct

import jax
import numpy as np
import pytest

import helpers
from configs import default_toy
from score_sde import checkpointing, datasets, models, parallel, train_state
from score_sde import training


def _steps_then_signal(monkeypatch, at_batch):
  """Delivers SIGTERM to this process when the loop takes batch ``at_batch`` (batches are
  prefetched, so the loop's take, not the data iterator's draw, marks the step)."""
  original = parallel.Prefetcher.__next__
  taken = [0]

  def next_with_signal(self):
    taken[0] += 1
    if taken[0] == at_batch:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self)
  monkeypatch.setattr(parallel.Prefetcher, '__next__', next_with_signal)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """12 uninterrupted steps of the tiny config: the reference for the resume tests."""
  state = training.train_and_evaluate(helpers.tiny_toy_config(),
                                      str(tmp_path_factory.mktemp("straight")))
  assert int(state.step) == 12
  return state


def test_kill_and_resume_equals_uninterrupted_training(tmp_path, monkeypatch, straight):
  config = helpers.tiny_toy_config()

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
  helpers.assert_trees_equal(resumed, straight)       # params, EMA, optimizer state and step
  steps = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir),
                                     read_only=True).all_steps()
  assert steps == [8, 12]                     # snapshot_freq=8 kept forever, plus the latest


def test_training_further_continues_from_the_last_step(tmp_path, straight):
  config = helpers.tiny_toy_config(n_iters=8)
  first = training.train_and_evaluate(config, str(tmp_path))
  config.training.n_iters = 12
  again = training.train_and_evaluate(config, str(tmp_path))
  assert int(first.step) == 8 and int(again.step) == 12
  helpers.assert_trees_equal(again, straight)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  original = datasets.ToyIterator.__next__

  def poisoned(self):
    batch = original(self)
    if self.step >= 7:
      batch['image'] = np.full_like(batch['image'], np.nan)
    return batch
  monkeypatch.setattr(datasets.ToyIterator, '__next__', poisoned)
  with pytest.raises(training.NonFiniteLossError, match='last good checkpoint'):
    training.train_and_evaluate(helpers.tiny_toy_config(), str(tmp_path))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path)), read_only=True)
  assert ckpt.latest_step() == 4
  config = helpers.tiny_toy_config()
  template = train_state.init_train_state(config, models.get_model(config),
                                       train_state.get_optimizer(config.optim), jax.random.PRNGKey(0))
  state, data_state = ckpt.restore(template)
  assert int(state.step) == 4 and data_state == {'train': {'step': 4}, 'eval': {'step': 0}}
  assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(state.params))


def test_corrupt_and_missing_checkpoints_raise_clear_errors(tmp_path):
  config = helpers.tiny_toy_config(n_iters=4)
  template = train_state.init_train_state(config, models.get_model(config),
                                       train_state.get_optimizer(config.optim), jax.random.PRNGKey(0))
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
  with pytest.raises(checkpointing.CheckpointError, match='Checkpoint step 4 is unreadable'):
    ckpt.restore(template)

  wider = helpers.tiny_toy_config()
  wider.model.nf = 48
  wider_template = train_state.init_train_state(wider, models.get_model(wider),
                                             train_state.get_optimizer(wider.optim),
                                             jax.random.PRNGKey(0))
  training.train_and_evaluate(helpers.tiny_toy_config(n_iters=4), str(tmp_path / 'run2'))
  with pytest.raises(checkpointing.CheckpointError, match='config it was trained with'):
    checkpointing.Checkpointer(checkpointing.checkpoint_dir(str(tmp_path / 'run2')),
                               read_only=True).restore(wider_template)


@pytest.mark.parametrize('field,value,match', [
    ('training.sde', 'bridge',
     r"Unknown training.sde 'bridge'; valid: \['edm', 'rectified_flow', 'subvpsde', 'vesde', 'vpsde'\]"),
    ('model.name', 'unet9000', r"Unknown model.name 'unet9000'; valid: \[.*'mlp'"),
    ('data.dataset', 'imagenet9', r"Unknown dataset 'imagenet9'; valid: \[.*'spiral'"),
    ('training.batch_size', 60, 'not divisible by the number of devices'),
    ('optim.optimizer', 'SGD', r"Unknown optim.optimizer 'SGD'; valid: \['Adam'\]"),
    ('optim.decay', 'step', r"Unknown optim.decay 'step'; valid: \['none', 'cosine'\]"),
])
def test_bad_config_values_fail_before_training(tmp_path, field, value, match):
  config = helpers.tiny_toy_config()
  section, key = field.split('.')
  setattr(config[section], key, value)
  with pytest.raises(ValueError, match=match):
    training.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))


def test_cosine_decay_follows_its_closed_form_and_none_is_the_papers_constant():
  optim = helpers.tiny_toy_config().optim
  optim.lr, optim.warmup = 1e-3, 10
  constant = train_state.learning_rate(optim, 110)
  assert [float(constant(s)) for s in (5, 10, 110, 500)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])
  optim.decay, optim.lr_final_fraction = 'cosine', 0.1
  cosine = train_state.learning_rate(optim, 110)
  for step in (0, 5, 10, 35, 60, 110, 200):
    u = min(max((step - 10) / 100, 0), 1)
    want = 1e-3 * step / 10 if step < 10 else 1e-3 * (0.1 + 0.9 * (1 + np.cos(np.pi * u)) / 2)
    assert float(cosine(step)) == pytest.approx(want, rel=1e-5), step


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
  training.train_and_evaluate(helpers.tiny_toy_config(), str(tmp_path))
  tags = _read_scalar_tags(os.path.join(tmp_path, 'tensorboard'))
  assert {'train/loss', 'train/grad_norm', 'train/steps_per_sec', 'eval/loss'} <= tags


def test_classifier_training_survives_sigterm_and_resumes_exactly(tmp_path, monkeypatch):
  """The classifier trains on the score model's loop: SIGTERM saves and stops, the same call
  resumes from there, and the result equals an uninterrupted run (params, optimizer, step)."""
  from score_sde import classifier_training
  config = helpers.tiny_toy_config()
  config.data.dataset, config.data.num_classes = 'gaussian_mixture', 2
  c = config.classifier
  c.nf, c.num_layers, c.n_iters, c.batch_size, c.log_freq, c.snapshot_freq = 16, 1, 6, 64, 3, 3
  straight = classifier_training.train_classifier(config, str(tmp_path / 'straight'))
  workdir = str(tmp_path / 'resumed')
  with monkeypatch.context() as m:
    _steps_then_signal(m, at_batch=4)
    stopped = classifier_training.train_classifier(config, workdir)
  assert int(stopped.step) == 4
  assert checkpointing.Checkpointer(checkpointing.classifier_checkpoint_dir(workdir),
                                    read_only=True).all_steps() == [4]
  resumed = classifier_training.train_classifier(config, workdir)
  assert int(resumed.step) == int(straight.step) == 6
  helpers.assert_trees_equal(resumed, straight)
  _, params = checkpointing.load_classifier(config, workdir)
  helpers.assert_trees_equal(params, straight.params)
