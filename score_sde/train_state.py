"""The train state, its optimizer and its EMA: what a step updates and a checkpoint stores.

``TrainState`` holds arrays only (step, params, EMA params, optimizer state); the learning-rate
schedule, clipping and the EMA rate live in the optimizer and the step function. Every trainable
thing (score model, classifier) uses it; a classifier keeps ``ema_params = params``.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from score_sde import datasets, posthoc_ema
from score_sde.errors import ConfigError
from score_sde.models import utils as mutils


@flax.struct.dataclass
class TrainState:
  """Arrays only: the schedule, EMA rate and RNG live in the optimizer and the step function."""
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  power_ema_params: tuple | None = None   # post-hoc EMA's power EMAs; None when off (the
                                          # layout of checkpoints without them)


def _adam(optim, schedule):
  return optax.adamw(learning_rate=schedule, b1=optim.beta1, eps=optim.eps,
                     weight_decay=optim.weight_decay)


OPTIMIZERS = {'Adam': _adam}


DECAYS = ('none', 'cosine')


def learning_rate(optim, n_iters: int | None = None) -> optax.Schedule:
  """The paper's linear warm-up lr min(step / warmup, 1), then constant (``optim.decay =
  'none'``) or, with ``'cosine'``, lr (f + (1 - f) (1 + cos(pi u)) / 2) with
  u = (step - warmup) / (n_iters - warmup) clipped to [0, 1] and f = ``optim.lr_final_fraction``:
  annealing to the end of a run of ``n_iters`` steps (a short run's last iterates then average
  less optimizer noise than any EMA of a constant-lr run). The schedule is not part of the
  state: a run restored for evaluation may leave ``n_iters`` out."""
  decay = optim.get('decay', 'none')
  if decay not in DECAYS:
    raise ConfigError(f'optim.decay = {decay!r} is not one of {list(DECAYS)}.')
  warmup = optax.linear_schedule(0.0, optim.lr, optim.warmup) if optim.warmup > 0 else None
  if decay == 'none' or n_iters is None:
    return warmup or optax.constant_schedule(optim.lr)
  span = max(int(n_iters) - int(optim.warmup), 1)
  cosine = optax.cosine_decay_schedule(optim.lr, span, alpha=optim.get('lr_final_fraction', 0.0))
  if warmup is None:
    return cosine
  return optax.join_schedules([warmup, cosine], [int(optim.warmup)])


def get_optimizer(optim, n_iters: int | None = None) -> optax.GradientTransformation:
  """Global-norm clipping, then Adam(W) at ``learning_rate(optim, n_iters)``."""
  if optim.optimizer not in OPTIMIZERS:
    raise ConfigError(f'Unknown optimizer {optim.optimizer!r}; valid: {sorted(OPTIMIZERS)}.')
  schedule = learning_rate(optim, n_iters)
  chain = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip > 0 else []
  return optax.chain(*chain, OPTIMIZERS[optim.optimizer](optim, schedule))


def get_classifier_optimizer(classifier_config) -> optax.GradientTransformation:
  """The noise-conditional classifier's: global-norm clipping at 1, then Adam at ``lr``."""
  return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(classifier_config.lr))


def apply_gradients(state: TrainState, grads, optimizer: optax.GradientTransformation,
                    axis_name: str | None = None) -> TrainState:
  """One optimizer step of a state that keeps no EMA (``ema_params`` = ``params``: a classifier,
  an autoencoder, a contrastive pair), ``grads`` averaged over the devices of ``axis_name``."""
  from score_sde import parallel
  grads = parallel.pmean(grads, axis_name)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, ema_params=params,
                       opt_state=opt_state)


def ema_update(params, ema_params, ema_rate: float):
  """The paper's EMA: ema <- rate * ema + (1 - rate) * params."""
  return optax.incremental_update(params, ema_params, 1.0 - ema_rate)


def power_ema_update(power_ema_params, params, step, gammas):
  """Post-hoc EMA's power EMAs after optimizer step ``step`` (``posthoc_ema.update``); None
  stays None."""
  if power_ema_params is None:
    return None
  return posthoc_ema.update(power_ema_params, params, step, gammas)


def posthoc_gammas(config) -> tuple[float, ...]:
  """The exponents of the power EMAs of ``training.posthoc_ema_sigma_rels`` (empty: off)."""
  rels = config.training.get('posthoc_ema_sigma_rels') or ()
  return tuple(posthoc_ema.gamma_of_sigma_rel(s) for s in rels)


def new_state(params, optimizer: optax.GradientTransformation,
              num_power_emas: int = 0) -> TrainState:
  """Step 0 of a state whose EMAs (and ``num_power_emas`` power EMAs) start at ``params``."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=optimizer.init(params),
                    power_ema_params=(tuple(params for _ in range(num_power_emas))
                                      if num_power_emas else None))


def init_train_state(config, model, optimizer, rng) -> TrainState:
  """A fresh score-model state (also the template a checkpoint restores into)."""
  return new_state(mutils.init_params(rng, model, datasets.sample_shape(config)), optimizer,
                   len(posthoc_gammas(config)))


def init_classifier_state(config, classifier, optimizer, rng) -> TrainState:
  """A fresh classifier state (``ema_params`` = ``params``: the classifier keeps no EMA)."""
  from score_sde.models import classifier as classifiers
  return new_state(classifiers.init_params(rng, classifier, datasets.sample_shape(config)),
                   optimizer)


def restore_template(config, model=None) -> TrainState:
  """The structure of ``config``'s train state, for restoring a checkpoint (built, not trained)."""
  from score_sde import models
  model = model if model is not None else models.get_model(config)
  return init_train_state(config, model, get_optimizer(config.optim), jax.random.PRNGKey(0))
