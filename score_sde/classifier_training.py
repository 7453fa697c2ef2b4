"""Training the noise-conditional classifier of classifier guidance:
``train.py --mode=train_classifier`` -> ``<workdir>/classifier/checkpoints``.

Loss: cross-entropy of p_t(y | x(t)) on x(t) = m(t) x(0) + s(t) z, t ~ U(eps, T), for the SDE the
score model uses (``training.sde``), so the classifier sees exactly the noisy inputs the sampler
asks about. Noise is keyed per global example index as in ``losses``; the pmapped step averages
gradients over devices. The state is ``losses.TrainState`` (``ema_params`` = ``params``).
"""
from __future__ import annotations

import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from score_sde import checkpointing, datasets, losses, parallel, sde_lib
from score_sde.errors import ConfigError, MissingFileError
from score_sde.generation import sample_shape
from score_sde.models import classifier as classifiers


def classifier_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'classifier')


def get_classifier_step_fn(sde, classifier, optimizer, eps: float = 1e-5):
  """``step_fn(state, batch, rng, axis_name=None) -> (state, {'loss', 'accuracy'})``."""
  def loss_fn(params, x, y, rng, index_offset):
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index_offset + jnp.arange(x.shape[0]))
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0)))(keys)
    z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x.shape[1:]))(keys)
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


def _optimizer(config):
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(config.classifier.lr))


def init_state(config, classifier, optimizer, rng) -> losses.TrainState:
  params = classifiers.init_params(rng, classifier, sample_shape(config))
  return losses.TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                           opt_state=optimizer.init(params))


def train_classifier(config, workdir: str, devices: Sequence | None = None) -> losses.TrainState:
  """Trains ``config.classifier`` for ``classifier.n_iters`` steps on the labelled training data
  and saves it under ``<workdir>/classifier``; resumes from a checkpoint there."""
  if config.data.num_classes is None:
    raise ConfigError('Training a classifier needs labelled data: set data.num_classes.')
  devices = list(devices or jax.local_devices())
  sde = sde_lib.get_sde(config)
  classifier = classifiers.get_classifier(config)
  optimizer = _optimizer(config)
  c = config.classifier
  data = datasets.get_dataset(config, 'train', num_local_devices=len(devices),
                              batch_size=c.batch_size)
  p_step = parallel.pmap_step(get_classifier_step_fn(sde, classifier, optimizer), devices)
  init_rng, train_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), 7))
  state = init_state(config, classifier, optimizer, init_rng)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(classifier_dir(workdir)))
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(state)
    data.set_state(data_state.get('train', data.get_state()))
  p_state = parallel.replicate(state, devices)
  t0, step0 = time.time(), int(state.step)
  try:
    for step in range(step0 + 1, c.n_iters + 1):
      batch = next(data)
      if 'label' not in batch:
        raise ConfigError(f'Dataset {config.data.dataset!r} yields no labels; a classifier needs '
                          'them.')
      p_state, metrics = p_step(p_state, batch, train_rng)
      if step % c.log_freq == 0 or step == c.n_iters:
        rate = (step - step0) / max(time.time() - t0, 1e-9)
        print(f'classifier step {step}/{c.n_iters}  loss {float(metrics["loss"][0]):.4f}  '
              f'accuracy {float(metrics["accuracy"][0]):.3f}  {rate:.1f} steps/s', flush=True)
    state = parallel.unreplicate(p_state)
    if int(state.step) > step0:
      ckpt.save(int(state.step), state, {'train': data.get_state()})
      print(f'Saved the classifier at step {int(state.step)} in {ckpt.directory}.')
  finally:
    ckpt.close()
  return state


def load_classifier(config, workdir: str):
  """(classifier module, parameters) of the latest classifier checkpoint of ``workdir``."""
  classifier = classifiers.get_classifier(config)
  optimizer = _optimizer(config)
  template = init_state(config, classifier, optimizer, jax.random.PRNGKey(0))
  directory = checkpointing.checkpoint_dir(classifier_dir(workdir))
  if not os.path.isdir(directory):
    raise MissingFileError(f'No classifier checkpoints in {directory}; train one with '
                           f'train.py --mode=train_classifier --workdir={workdir}.')
  ckpt = checkpointing.Checkpointer(directory, read_only=True)
  try:
    state, _ = ckpt.restore(template)
  finally:
    ckpt.close()
  return classifier, state.params
