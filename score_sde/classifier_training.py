"""Training the noise-conditional classifier of classifier guidance:
``train.py --mode=train_classifier`` -> ``<workdir>/classifier/checkpoints``.

Loss: cross-entropy of p_t(y | x(t)) on x(t) = m(t) x(0) + s(t) z, t ~ U(eps, T), for the SDE the
score model uses (``training.sde``), so the classifier sees exactly the noisy inputs the sampler
asks about. Noise is keyed per global example index as in ``losses``; the step averages
gradients over devices. The state is ``train_state.TrainState`` (``ema_params`` = ``params``);
the loop, its checkpoints, signal handling and resumption are ``training.run``'s.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from score_sde import checkpointing, config_checks, datasets, losses, parallel, sde_lib
from score_sde import train_state, training
from score_sde.errors import ConfigError
from score_sde.models import classifier as classifiers


def get_classifier_step_fn(sde, classifier, optimizer, eps: float = 1e-5):
  """``step_fn(state, batch, rng, axis_name=None) -> (state, {'loss', 'accuracy'})``."""
  def loss_fn(params, x, y, rng, index_offset):
    u, z = losses.per_example_noise(rng, x, index_offset)
    t = u * (sde.T - eps) + eps
    mean, std = sde.marginal_prob(x, t)
    logits = classifier.apply({'params': params}, mean + sde_lib.batch_mul(std, z), std,
                              train=True)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)

  def step_fn(state, batch, rng, axis_name=None):
    x, y = batch['image'], batch['label']
    rng = jax.random.fold_in(rng, state.step)
    offset = parallel.device_index(axis_name) * x.shape[0]
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, y, rng, offset)
    grads = parallel.pmean(grads, axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=params,
                              opt_state=opt_state)
    return new_state, parallel.pmean({'loss': loss, 'accuracy': acc}, axis_name)
  return step_fn


class _Labelled:
  """The training data, checked to carry labels (a classifier needs them)."""

  def __init__(self, it, dataset: str):
    self._it, self._dataset = it, dataset

  def __next__(self):
    batch = next(self._it)
    if 'label' not in batch:
      raise ConfigError(f'Dataset {self._dataset!r} yields no labels; a classifier needs them.')
    return batch

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)


def train_classifier(config, workdir: str,
                     devices: Sequence | None = None) -> train_state.TrainState:
  """Trains ``config.classifier`` for ``classifier.n_iters`` steps on the labelled training data
  under ``<workdir>/classifier``, on the training loop of the score model: it saves every
  ``classifier.snapshot_freq`` steps and on SIGTERM / Ctrl-C, and resumes from there."""
  parallel.initialize_distributed(config.training.distributed)
  devices = list(devices or jax.local_devices())
  config_checks.check(config, 'train_classifier', len(devices))   # before anything is written
  mesh = parallel.make_mesh(devices if jax.process_count() == 1 else None)
  sde = sde_lib.get_sde(config)
  classifier = classifiers.get_classifier(config)
  optimizer = train_state.get_classifier_optimizer(config.classifier)
  c = config.classifier
  data = datasets.get_dataset(config, 'train', num_local_devices=len(devices),
                              batch_size=c.batch_size)
  init_rng, train_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 7))
  snapshot = c.get('snapshot_freq', c.n_iters)
  job = training.Job(
      'classifier', lambda rng: train_state.init_classifier_state(config, classifier, optimizer, rng),
      get_classifier_step_fn(sde, classifier, optimizer), _Labelled(data, config.data.dataset),
      training.Schedule(c.n_iters, c.log_freq, eval_freq=c.n_iters, snapshot_freq=snapshot,
                        snapshot_freq_for_preemption=snapshot, keep_snapshots=False),
      checkpointing.classifier_checkpoint_dir(workdir),
      rng=(init_rng, train_rng, train_rng), log_metrics=('loss', 'accuracy'),
      batch_size=c.batch_size, batch_key='classifier.batch_size')
  return training.run(job, mesh)
