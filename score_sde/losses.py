"""Denoising score matching and the pure train / eval step.

With x(t) = m x(0) + s z, z ~ N(0, I), the per-example loss is

    continuous:  lambda(t) || s_theta(x(t), t) + z / s ||^2,   t ~ U(eps, T)
                 lambda(t) = s^2 (default) or g(t)^2 (``likelihood_weighting``)
    discrete:    || s_theta(x_i, i) s_i + z ||^2,              i ~ U{0, ..., N-1}

summed (or, with ``reduce_mean``, averaged) over data dimensions. The discrete loss is DDPM's
epsilon loss for VP (s_i = sqrt(1 - alpha_bar_i)) and SMLD's sigma^2-weighted loss for VE
(s_i = sigma_i): both are the continuous one on the discrete chain's kernel.

Randomness is drawn per example from ``fold_in(rng, global example index)``, so a step gives the
same result whatever the number of devices the global batch is split over.

Class-conditional models learn s(x, t, y) from ``batch['label']``; each label is replaced by the
null class (label num_classes) with probability ``label_dropout``, so the same network also
learns the unconditional score s(x, t) of classifier-free guidance. Context-conditional models
(cross-attention to ``batch['context']`` (B, L, D): text-encoder states, dataset embeddings)
learn s(x, t, c) alike, each context replaced by the null context (zeros) at the same rate.

The few-step objectives (``consistency.OBJECTIVES``) train the same networks for the
``few_step`` sampler: 'ct' and 'cd' read the score network as a consistency function (iCT's loss;
'ct' with its curriculum over the run's steps, 'cd' with a teacher's score), 'meanflow' a
two-time network as MeanFlow's average velocity. All are drawn down to ``eps`` = sampling.eps.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from score_sde import consistency, parallel, parameterization, sde_lib, train_state
from score_sde.errors import ConfigError
from score_sde.models import precond
from score_sde.models import utils as mutils


def per_example_noise(rng, x, index_offset):
  """(u, z): u ~ U(0, 1) of shape (B,) and z ~ N(0, I) of x's shape, keyed by global index."""
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index_offset + jnp.arange(x.shape[0]))
  u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0)))(keys)
  z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x.shape[1:]))(keys)
  return u, z


def training_times(sde, u, eps, edm):
  """t ~ U(eps, T), or EDM's log-normal sigma (the process's own, else the EDM model's)."""
  if sde.training_log_sigma is not None:
    return precond.sample_times(sde, u, eps, *sde.training_log_sigma)
  if edm is not None:
    return precond.sample_times(sde, u, eps, edm.P_mean, edm.P_std)
  return u * (sde.T - eps) + eps


def check_objective(objective, *, continuous=True, likelihood_weighting=False, edm=None):
  """Raises ConfigError for a ``training.objective`` the other settings cannot train."""
  if objective is None or objective == 'score':
    return
  if objective not in consistency.OBJECTIVES:
    parameterization.check(objective, 'training.objective')
  few_step = objective in consistency.OBJECTIVES   # EDM's preconditioning suits them
  clash = ('training.continuous=False' if not continuous else
           'training.likelihood_weighting=True' if likelihood_weighting else
           "model.precond='edm'" if edm is not None and not few_step else None)
  if clash:
    if few_step:
      raise ConfigError(f'training.objective={objective!r} cannot be combined with {clash}: '
                        'the few-step objectives are continuous-time with their own weights.')
    raise ConfigError(f'training.objective={objective!r} cannot be combined with {clash}: it '
                      "regresses the continuous-time quantity unweighted; use 'score' (the "
                      'weighted DSM loss) there.')


def dsm_losses(rng, score_fn, x, sde, *, continuous=True, reduce_mean=False,
               likelihood_weighting=False, eps=1e-5, index_offset=0, edm=None,
               objective=None) -> jax.Array:
  """Per-example denoising score matching losses, (B, ...) -> (B,). See the module docstring.

  ``score_fn(x, t)`` takes times t (B,) float; with ``continuous=False`` it takes the integer
  steps i (B,) of the discrete chain instead (``models.utils.get_step_score_fn``).

  ``edm``: an ``EDMPrecond`` model: log-normal noise levels and EDM's weighting (models/precond).
  ``objective``: None / 'score' is the loss above; 'eps' | 'x0' | 'velocity' regress that
  quantity (``score_sde.parameterization``) unweighted: ||q_theta(x(t), t) - q||^2 with
  q = a x(0) + b z, e.g. flow matching ('velocity': q = m'(t) x(0) + s'(t) z). At fixed x(t),
  q - q_theta = s (b - a s / m) (score_theta - score), so each is the DSM loss with
  lambda(t) = s^2 (b - a s / m)^2: s^2 for 'eps' (the default), s^4 / m^2 for 'x0' and
  g(t)^4 / 4 for 'velocity'.
  """
  check_objective(objective, continuous=continuous, likelihood_weighting=likelihood_weighting,
                  edm=edm)
  u, z = per_example_noise(rng, x, index_offset)
  if continuous:
    t = training_times(sde, u, eps, edm)
    mean, std = sde.marginal_prob(x, t)
  else:
    t = jnp.minimum((u * sde.N).astype(jnp.int32), sde.N - 1)   # the step index i
    mean_coeff, std = sde.discrete_kernel(t)
    mean = sde_lib.batch_mul(mean_coeff, x)
  x_t = mean + sde_lib.batch_mul(std, z)
  score = score_fn(x_t, t)
  reduce = jnp.mean if reduce_mean else jnp.sum
  if objective not in (None, 'score'):
    coeffs = parameterization.coefficients(sde, t)
    residual = (parameterization.convert(score, x_t, 'score', objective, coeffs)
                - parameterization.target(objective, x, z, coeffs))
    return reduce(residual.reshape(x.shape[0], -1)**2, axis=-1)
  if continuous and likelihood_weighting:
    g2 = sde.sde(jnp.zeros_like(x), t)[1]**2
    residual = score + sde_lib.batch_mul(1.0 / std, z)
    return reduce(residual.reshape(x.shape[0], -1)**2, axis=-1) * g2
  residual = sde_lib.batch_mul(std, score) + z
  weight = 1.0 if edm is None else precond.loss_weight(sde, t, edm.sigma_data)
  return reduce(residual.reshape(x.shape[0], -1)**2, axis=-1) * weight


def drop_labels(rng, labels, num_classes: int, rate: float, index_offset=0) -> jax.Array:
  """(B,) labels with each replaced by the null class num_classes with probability ``rate``."""
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index_offset + jnp.arange(len(labels)))
  drop = jax.vmap(lambda k: jax.random.bernoulli(k, rate))(keys)
  return jnp.where(drop, num_classes, labels.astype(jnp.int32))


def get_few_step_loss_fn(sde, model, objective: str, *, train: bool, eps: float,
                         total_steps: int = 1, teacher_score_fn=None, num_levels: int = 18,
                         metric: str = 'pseudo_huber', level_ratio=None,
                         teacher_substeps: int = 1, meanflow_ratio: float = 0.25) -> Callable:
  """loss_fn(params, x, rng, index_offset, labels=None, step=0) of a few-step ``objective``.

  'ct': ``consistency.consistency_losses`` with N(step) levels of iCT's curriculum over
  ``total_steps``; 'cd': with ``num_levels`` levels (or any level and the one ``level_ratio``
  below it) and ``teacher_substeps`` Heun steps of ``teacher_score_fn`` between them;
  'meanflow': ``consistency.meanflow_pair_losses`` of the two-time network. ``eps``: the smallest
  time (the consistency boundary, the last MeanFlow jump's end). ``metric``: the consistency
  loss's distance (``consistency.METRICS``)."""
  if objective == 'cd' and teacher_score_fn is None:
    raise ConfigError("training.objective='cd' needs a teacher: set training.teacher_workdir to "
                      'a trained score model of the same SDE and data.')

  def loss_fn(params, x, rng, index_offset, labels=None, step=0, context=None):
    del labels, context   # few-step models are unconditional
    noise_rng, dropout_rng = jax.random.split(rng)
    dropout_rng = jax.random.fold_in(dropout_rng, index_offset)
    if objective == 'meanflow':
      u_fn = mutils.get_average_velocity_fn(sde, model, params, train=train, rng=dropout_rng)
      losses = consistency.meanflow_pair_losses(noise_rng, u_fn, x, sde, eps=eps,
                                                ratio=meanflow_ratio, index_offset=index_offset)
      return jnp.mean(losses), losses
    score_fn = mutils.get_score_fn(sde, model, params, train=train, rng=dropout_rng)
    levels = (consistency.ct_num_levels(step, total_steps) if objective == 'ct' else num_levels)
    losses = consistency.consistency_losses(
        noise_rng, score_fn, x, sde, num_levels=levels, eps=eps, index_offset=index_offset,
        teacher_score_fn=teacher_score_fn if objective == 'cd' else None, metric=metric,
        level_ratio=level_ratio if objective == 'cd' else None,
        teacher_substeps=teacher_substeps)
    return jnp.mean(losses), losses
  return loss_fn


def drop_context(rng, context, rate: float, index_offset=0) -> jax.Array:
  """(B, L, D) contexts with each replaced by the null context (zeros) with probability
  ``rate``; example i draws from ``fold_in(rng, index_offset + i)`` as in ``drop_labels``."""
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index_offset + jnp.arange(len(context)))
  keep = jax.vmap(lambda k: jax.random.bernoulli(k, 1.0 - rate))(keys)
  return jnp.where(keep[:, None, None], context, jnp.zeros_like(context))


def get_loss_fn(sde, model, *, train: bool, continuous=True, reduce_mean=False,
                likelihood_weighting=False, eps=1e-5, label_dropout=0.0,
                objective=None, few_step=None) -> Callable:
  """loss_fn(params, x, rng, index_offset, labels=None, step=0, context=None) -> (mean loss,
  per-example losses). A few-step ``objective`` takes ``get_few_step_loss_fn``'s keyword
  arguments ``few_step`` (a dict)."""
  num_classes = mutils.num_classes(model)
  edm = model if isinstance(model, precond.EDMPrecond) else None
  check_objective(objective, continuous=continuous, likelihood_weighting=likelihood_weighting,
                  edm=edm)
  if objective in consistency.OBJECTIVES:
    return get_few_step_loss_fn(sde, model, objective, train=train, **(few_step or {}))

  def loss_fn(params, x, rng, index_offset, labels=None, step=0, context=None):
    del step
    noise_rng, dropout_rng = jax.random.split(rng)
    if num_classes and labels is not None and train:
      labels = drop_labels(jax.random.fold_in(rng, 2), labels, num_classes, label_dropout,
                           index_offset)
    if context is not None and train:
      context = drop_context(jax.random.fold_in(rng, 3), context, label_dropout, index_offset)
    dropout_rng = jax.random.fold_in(dropout_rng, index_offset)
    cond = dict(train=train, rng=dropout_rng, class_labels=labels, context=context)
    score_fn = (mutils.get_score_fn(sde, model, params, **cond) if continuous else
                mutils.get_step_score_fn(sde, model, params, **cond))
    losses = dsm_losses(noise_rng, score_fn, x, sde, continuous=continuous, reduce_mean=reduce_mean,
                        likelihood_weighting=likelihood_weighting, eps=eps,
                        index_offset=index_offset, edm=edm, objective=objective)
    return jnp.mean(losses), losses
  return loss_fn


def get_step_fn(sde, model, optimizer: optax.GradientTransformation, *, train: bool,
                ema_rate: float, continuous=True, reduce_mean=False, likelihood_weighting=False,
                eps=1e-5, label_dropout=0.0, objective=None, few_step=None,
                posthoc_gammas=()) -> Callable:
  """One pure step ``step_fn(state, batch, rng, axis_name=None) -> (state, metrics)``.

  ``batch['image']`` is this device's (b, ...) slice of the global batch; ``rng`` is the run's
  base key (the step folds in ``state.step``). Under ``pmap`` pass ``axis_name``: gradients and
  metrics are averaged over devices, so the result equals the single-device step on the whole
  batch. With ``train=False`` the EMA parameters are evaluated and the state is unchanged.
  A class-conditional model reads ``batch['label']`` (labels are dropped at ``label_dropout``),
  a context-conditional one ``batch['context']`` (B, L, D) (dropped to zeros at that rate).
  ``posthoc_gammas``: exponents of the state's power EMAs (post-hoc EMA), updated after each step.
  ``objective`` / ``few_step``: as ``get_loss_fn`` (CT's curriculum reads ``state.step``).
  """
  loss_fn = get_loss_fn(sde, model, train=train, continuous=continuous, reduce_mean=reduce_mean,
                        likelihood_weighting=likelihood_weighting, eps=eps,
                        label_dropout=label_dropout, objective=objective, few_step=few_step)
  conditional = bool(mutils.num_classes(model))
  with_context = mutils.context_shape(model) is not None

  def step_fn(state: train_state.TrainState, batch, rng, axis_name=None):
    x = batch['image']
    if conditional and 'label' not in batch:
      raise ConfigError('model.class_conditional needs labelled data; this dataset yields no '
                        "'label' (toy data: set data.num_classes).")
    if with_context and 'context' not in batch:
      raise ConfigError('A context-conditional model (cross-attention) needs data with '
                        "per-example contexts; this dataset yields no 'context' (set "
                        "data.context: 'captions' or an .npz of embeddings).")
    labels = batch['label'] if conditional else None
    context = batch['context'] if with_context else None
    rng = jax.random.fold_in(rng, state.step)
    offset = parallel.device_index(axis_name) * x.shape[0]
    if not train:
      loss, _ = loss_fn(state.ema_params, x, rng, offset, labels, state.step, context)
      return state, {'loss': parallel.pmean(loss, axis_name)}
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, x, rng, offset,
                                                                 labels, state.step, context)
    grads = parallel.pmean(grads, axis_name)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = train_state.ema_update(params, state.ema_params, ema_rate)
    power = train_state.power_ema_update(state.power_ema_params, params, state.step + 1,
                                         posthoc_gammas)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema_params,
                              opt_state=opt_state, power_ema_params=power)
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads)}
    return new_state, parallel.pmean(metrics, axis_name)
  return step_fn


def few_step_options(config, teacher_score_fn=None) -> dict:
  """``get_few_step_loss_fn``'s keyword arguments from ``config``."""
  tc = config.training
  return dict(eps=config.sampling.eps, total_steps=tc.n_iters, teacher_score_fn=teacher_score_fn,
              num_levels=tc.get('consistency_levels', 18),
              metric=tc.get('consistency_metric', 'pseudo_huber'),
              level_ratio=tc.get('consistency_ratio'),
              teacher_substeps=tc.get('teacher_substeps', 1),
              meanflow_ratio=tc.get('meanflow_ratio', 0.25))


def get_step_fns(config, sde, model, optimizer, teacher_score_fn=None):
  """(train_step, eval_step) of ``config.training``, both ``(state, batch, rng, axis_name=None)``.
  ``teacher_score_fn``: the teacher of consistency distillation (training.objective='cd')."""
  kwargs = dict(ema_rate=config.model.ema_rate, continuous=config.training.continuous,
                reduce_mean=config.training.reduce_mean,
                likelihood_weighting=config.training.likelihood_weighting,
                label_dropout=config.training.get('label_dropout', 0.0),
                objective=config.training.get('objective', None),
                few_step=few_step_options(config, teacher_score_fn),
                posthoc_gammas=train_state.posthoc_gammas(config))
  return (get_step_fn(sde, model, optimizer, train=True, **kwargs),
          get_step_fn(sde, model, optimizer, train=False, **kwargs))


def metrics_only(step_fn: Callable) -> Callable:
  """An evaluation step that returns no state (nothing to copy out of the devices)."""
  def step(state, batch, rng, axis_name=None):
    return (), step_fn(state, batch, rng, axis_name=axis_name)[1]
  return step
