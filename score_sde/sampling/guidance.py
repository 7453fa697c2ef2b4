"""Class guidance: wrappers that turn class-aware scores into a plain ``score_fn(x, t)``.

Every sampler takes ``score_fn(x, t)``, so guidance works with all of them without a new loop.
A *labelled* score is ``score_fn(x, t, y)`` with (B,) int labels y in [0, C]; y = C
(``num_classes``) is the null class: the unconditional score (a class-conditional network
trained with label dropout gives both, ``model_labelled_score_fn``; a Gaussian mixture gives
them exactly).

Classifier-free guidance (Ho & Salimans 2022), with guidance scale w:

    score(x, t) = (1 + w) s(x, t, y) - w s(x, t, null),

so w = 0 samples p(x | y), w > 0 sharpens towards the class (as if p(x | y) p(y | x)^w), and
w = -1 is unconditional. Both scores come from ONE forward pass over the batch [x; x] with labels
[y; null]. With a guidance interval (Kynkaenniemi et al. 2024) w applies only while the noise
level sigma(t) = s(t) / m(t) (the EDM sigma of x(t) = m x0 + s z, for VE just s(t)) lies in
[sigma_min, sigma_max]; outside it w = 0 and only the conditional half is evaluated.

The same guidance conditions on embedding sequences (``context_free_score_fn``): a context
(B, L, D) per example, e.g. a text encoder's states, and a null context (the empty prompt's).

Classifier guidance (Song et al. 2021, App. I; Dhariwal & Nichol 2021), with scale lambda:

    score(x, t) = s(x, t) + lambda grad_x log p_t(y | x),

log p_t(y | x) from a noise-conditional classifier's logits (``models/classifier.py``). With
exact scores, classifier-free guidance with w equals classifier guidance with lambda = 1 + w,
since grad log p_t(y | x) = s(x, t, y) - s(x, t).
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.errors import ConfigError, DataError
from score_sde.models import utils as mutils

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
LabelledScoreFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
LogitFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_labels(labels, num_classes: int) -> np.ndarray:
  """(B,) int labels, each in [0, num_classes); raises DataError naming the first bad one."""
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'Class labels must be a 1-D array of integers, got shape {labels.shape} '
                    f'dtype {labels.dtype}.')
  bad = labels[(labels < 0) | (labels >= num_classes)]
  if bad.size:
    raise DataError(f'Class label {int(bad[0])} is out of range; valid: 0..{num_classes - 1}.')
  return labels.astype(np.int32)


def in_guidance_interval(sde, t: jax.Array, sigma_min: float = 0.0,
                         sigma_max: float = math.inf) -> jax.Array:
  """(B,) bool: sigma_min <= sigma(t) <= sigma_max, sigma(t) = s(t) / m(t)."""
  sigma = sde.sigma_of_t(t)
  return (sigma >= sigma_min) & (sigma <= sigma_max)


def classifier_free_score_fn(labelled_score_fn: LabelledScoreFn, sde, labels, num_classes: int,
                             scale: float, sigma_min: float = 0.0,
                             sigma_max: float = math.inf) -> ScoreFn:
  """score(x, t) = s(x, t, y) + w (s(x, t, y) - s(x, t, null)), w = ``scale`` inside the
  guidance interval and 0 outside; labels: (B,) ints y. See the module docstring."""
  labels = jnp.asarray(labels, jnp.int32)
  return guided_score_fn(labelled_score_fn, sde, labels, jnp.full_like(labels, num_classes),
                         scale, sigma_min, sigma_max)


def context_free_score_fn(context_score_fn: LabelledScoreFn, sde, context, null_context,
                          scale: float, sigma_min: float = 0.0,
                          sigma_max: float = math.inf) -> ScoreFn:
  """Classifier-free guidance on an embedding sequence: ``context`` (B, L, D) per example (e.g.
  a text encoder's states of B prompts), ``null_context`` (L, D) the unconditional one (the
  empty prompt's states); s(x, t, c) = ``context_score_fn(x, t, c)`` with c: (B, L, D)."""
  context = jnp.asarray(context)
  null = jnp.broadcast_to(jnp.asarray(null_context, context.dtype), context.shape)
  return guided_score_fn(context_score_fn, sde, context, null, scale, sigma_min, sigma_max)


def guided_score_fn(conditioned_score_fn: LabelledScoreFn, sde, cond, null, scale: float,
                    sigma_min: float = 0.0, sigma_max: float = math.inf) -> ScoreFn:
  """Classifier-free guidance on any conditioning: ``cond`` and ``null`` are (B, ...) arrays
  (labels, contexts) for ``conditioned_score_fn(x, t, cond)``; one forward pass over
  [x; x] with [cond; null] gives both scores."""
  always_outside = sigma_min > sigma_max

  def conditional(x, t):
    return conditioned_score_fn(x, t, cond)

  def guided(x, t):
    both = conditioned_score_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                                jnp.concatenate([cond, null]))
    cond_score, uncond = jnp.split(both, 2)
    w = jnp.where(in_guidance_interval(sde, t, sigma_min, sigma_max), scale, 0.0)
    return cond_score + sde_lib.batch_mul(w, cond_score - uncond)

  if isinstance(scale, (int, float)) and (scale == 0 or always_outside):
    return conditional
  if sigma_min <= 0 and sigma_max == math.inf:
    return guided

  def score_fn(x, t):
    # Samplers step the whole batch at one t: outside the interval skip the unconditional half.
    inside = jnp.any(in_guidance_interval(sde, t, sigma_min, sigma_max))
    return jax.lax.cond(inside, guided, conditional, x, t)
  return score_fn


def classifier_log_prob_grad(logit_fn: LogitFn, x, t, labels) -> jax.Array:
  """grad_x log p_t(y | x) = grad_x log_softmax(logit_fn(x, t))[y], x's shape."""
  def total_log_prob(x):
    log_p = jax.nn.log_softmax(logit_fn(x, t), axis=-1)
    return jnp.sum(jnp.take_along_axis(log_p, labels[:, None], axis=-1))
  return jax.grad(total_log_prob)(x)


def classifier_guided_score_fn(score_fn: ScoreFn, logit_fn: LogitFn, labels,
                               scale: float = 1.0) -> ScoreFn:
  """score(x, t) + scale grad_x log p_t(y | x): the paper's class-conditional sampling."""
  labels = jnp.asarray(labels, jnp.int32)

  def guided(x, t):
    return score_fn(x, t) + scale * classifier_log_prob_grad(logit_fn, x, t, labels)
  return guided


def model_labelled_score_fn(sde, model, params, continuous: bool = True) -> LabelledScoreFn:
  """``score_fn(x, t, y)`` of a class-conditional network (y = num_classes: unconditional)."""
  def labelled(x, t, y):
    return mutils.get_score_fn(sde, model, params, continuous=continuous, class_labels=y)(x, t)
  return labelled


def check_guidable(model) -> int:
  """The model's number of classes; ConfigError if it is not class-conditional."""
  num_classes = mutils.num_classes(model)
  if not num_classes:
    raise ConfigError('Class labels and classifier-free guidance need a class-conditional model '
                      '(model.class_conditional=True, data.num_classes); this one has no class '
                      'embedding. Use classifier guidance (--classifier_workdir) instead.')
  return num_classes


def _settings(config) -> tuple[float, float, float]:
  s = config.sampling
  return (float(s.guidance_scale), float(s.guidance_sigma_min), float(s.guidance_sigma_max))


def get_guided_score_fn(config, sde, model, params, labels) -> ScoreFn:
  """The classifier-free guided score of a class-conditional model for (B,) ``labels``, with
  ``config.sampling.guidance_scale`` and its interval [guidance_sigma_min, guidance_sigma_max]."""
  num_classes = check_guidable(model)
  return classifier_free_score_fn(
      model_labelled_score_fn(sde, model, params, config.training.continuous), sde, labels,
      num_classes, *_settings(config))


def model_context_score_fn(sde, model, params, continuous: bool = True) -> LabelledScoreFn:
  """``score_fn(x, t, c)`` of a context-conditional network, c: (B, L, D)."""
  def conditioned(x, t, c):
    return mutils.get_score_fn(sde, model, params, continuous=continuous, context=c)(x, t)
  return conditioned


def check_context(model, context, what: str = 'The context') -> tuple[int, int]:
  """The model's context shape (L, D); ConfigError if it takes none, DataError if ``context``
  (B, L, D) has another shape."""
  shape = mutils.context_shape(model)
  if shape is None:
    raise ConfigError(f'{what} conditions a model that cross-attends to embeddings '
                      "(model.name='unet_condition', or 'ncsnpp' / 'dit' with "
                      'model.context_dim); this model takes no context.')
  if context is not None and tuple(np.shape(context)[1:]) != shape:
    raise DataError(f'{what} has shape {tuple(np.shape(context)[1:])} per example; the model '
                    f'cross-attends to {shape} (model.context_length, model.context_dim).')
  return shape


def get_context_guided_score_fn(config, sde, model, params, context,
                                null_context=None) -> ScoreFn:
  """The classifier-free guided score of a context-conditional model for ``context`` (B, L, D)
  against ``null_context`` ((L, D) or (B, L, D); None: zeros, the null of training here), with
  the guidance settings of ``config.sampling``."""
  shape = check_context(model, context)
  null = jnp.zeros(shape) if null_context is None else null_context
  return context_free_score_fn(
      model_context_score_fn(sde, model, params, config.training.continuous), sde, context,
      null, *_settings(config))
