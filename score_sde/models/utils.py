"""From a network and its parameters to ``score_fn(x, t)``: the paper's noise conditioning.

Continuous-time training (Song et al. 2021):
  VP / sub-VP: the network sees label 999 t and predicts the noise z of x(t) = m x(0) + s z,
               so score = -output / s(t).
  VE:          the network sees label sigma(t) and predicts the score itself (NCSN++ divides by
               sigma inside when ``scale_by_sigma``).
Discrete-time training (DDPM / SMLD) conditions on the integer step i itself (``get_step_score_fn``):
label i and std sqrt(1 - alpha_bar_i) for VP, the SMLD noise-level index (largest sigma first) for
VE. Sampling a discrete model at time t follows the paper's code: VP label t (N - 1) with the noise
level of step floor(t (N - 1)); VE label round((T - t)(N - 1)).

Class-conditional networks (``num_classes`` set) also take ``class_labels`` (B,) in
[0, num_classes]; the label num_classes is the null class, i.e. the unconditional score, and is
what they get when no labels are given.

Context-conditional networks (``context_shape`` not None) also take ``context`` (B, L, D), a
sequence of embeddings they cross-attend to; without one they get zeros, the null context of
models trained here (``losses.drop_context``). A text model's null context is rather the empty
prompt's states, which sampling passes explicitly.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde import parameterization, sde_lib
from score_sde.errors import ConfigError
from score_sde.models import precond


def num_classes(model: nn.Module) -> int | None:
  """The number of classes of a class-conditional network (EDM-wrapped or not), else None."""
  return getattr(getattr(model, 'net', model), 'num_classes', None)


def context_shape(model: nn.Module) -> tuple[int, int] | None:
  """(L, D) of the context a context-conditional network reads (its ``context_dim``, or the
  ``cross_attention_dim`` of one that cross-attends to it directly), else None."""
  net = getattr(model, 'net', model)
  dim = getattr(net, 'context_dim', None) or getattr(net, 'cross_attention_dim', None)
  return None if dim is None else (int(net.context_length), int(dim))


def _class_kwargs(model: nn.Module, class_labels, batch: int, context=None) -> dict:
  """``class_labels`` for class-conditional networks (default: the null class), ``context`` for
  context-conditional ones (default: zeros, the null context), else nothing."""
  kwargs = {}
  n = num_classes(model)
  if n:
    kwargs['class_labels'] = (jnp.full((batch,), n, jnp.int32) if class_labels is None
                              else class_labels)
  shape = context_shape(model)
  if shape:
    kwargs['context'] = jnp.zeros((batch,) + shape) if context is None else context
  return kwargs


def init_params(rng, model: nn.Module, input_shape) -> Any:
  """Initial parameters for per-example inputs of ``input_shape`` (without the batch axis)."""
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  labels = jnp.ones((1,), jnp.float32)
  params_rng, dropout_rng = jax.random.split(rng)
  variables = model.init({'params': params_rng, 'dropout': dropout_rng}, x, labels, train=False,
                         **_class_kwargs(model, None, 1))
  return variables['params']


def get_model_fn(model: nn.Module, params, train: bool = False, rng=None,
                 class_labels=None, context=None) -> Callable:
  """``model_fn(x, labels)`` with the parameters (and class labels or context, a dropout key)
  bound."""
  def model_fn(x, labels):
    rngs = {'dropout': rng} if (train and rng is not None) else None
    return model.apply({'params': params}, x, labels, train=train, rngs=rngs,
                       **_class_kwargs(model, class_labels, x.shape[0], context))
  return model_fn


def _parameterized_score_fn(sde, model: precond.Parameterized, params, train=False, rng=None,
                            continuous=True, class_labels=None, context=None):
  """score_fn of a network predicting ``model.parameterization`` (continuous time only)."""
  if not continuous:
    raise ConfigError(f'model.parameterization={model.parameterization!r} needs '
                      'training.continuous=True (its conversions use the continuous m(t), s(t)).')
  model_fn = get_model_fn(model, params, train=train, rng=rng, class_labels=class_labels,
                          context=context)

  def score_fn(x, t):
    out = model_fn(x, sde.noise_conditioning(t)[0])
    return parameterization.convert(out, x, model.parameterization, 'score',
                                    parameterization.coefficients(sde, t))
  return score_fn


# Preconditioned networks (models/precond.py) and their score functions, for any SDE.
PRECONDITIONED_SCORE_FNS = {precond.EDMPrecond: precond.get_score_fn}


def get_score_fn(sde, model: nn.Module, params, train: bool = False, continuous: bool = True,
                 rng=None, class_labels=None,
                 context=None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """score_fn(x: (B, ...), t: (B,)) -> (B, ...), the model's estimate of grad_x log p_t(x).

  ``class_labels`` (B,): for a class-conditional model, the score of p_t(x | y) (entries equal
  to num_classes: of p_t(x)); None gives the unconditional score. ``context`` (B, L, D): for a
  context-conditional model, the score of p_t(x | c); None: the zero (null) context.
  """
  if type(model) is precond.Parameterized:   # a bare network read as another quantity
    return _parameterized_score_fn(sde, model, params, train=train, rng=rng, continuous=continuous,
                                   class_labels=class_labels, context=context)
  if type(model) in PRECONDITIONED_SCORE_FNS:   # the wrapper defines its own score (EDM)
    return PRECONDITIONED_SCORE_FNS[type(model)](
        sde, model, params, train=train, rng=rng,
        class_kwargs=lambda b: _class_kwargs(model, class_labels, b, context))
  model_fn = get_model_fn(model, params, train=train, rng=rng, class_labels=class_labels,
                          context=context)

  def score_fn(x, t):
    labels, std = sde.noise_conditioning(t, continuous)
    out = model_fn(x, labels)
    return out if std is None else -sde_lib.batch_mul(1.0 / std, out)
  return score_fn


def get_average_velocity_fn(sde, model: nn.Module, params, train: bool = False,
                            rng=None) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
  """u_fn(x: (B, ...), r: (B,), t: (B,)) -> (B, ...): MeanFlow's average velocity of the flow
  over [r, t] from a two-time network (``model.two_times``): conditioned on t as a score model
  is (``sde.noise_conditioning``) and on the span as the label 999 (t - r) / T."""
  def u_fn(x, r, t):
    rngs = {'dropout': rng} if (train and rng is not None) else None
    labels, _ = sde.noise_conditioning(t)
    return model.apply({'params': params}, x, labels, train=train, rngs=rngs,
                       interval=999.0 * (t - r) / sde.T)
  return u_fn


def get_step_score_fn(sde, model: nn.Module, params, train: bool = False, rng=None,
                      class_labels=None,
                      context=None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """score_fn(x: (B, ...), i: (B,) int) -> (B, ...) at step i of the discrete chain (the discrete
  losses' score: no time is rounded back to a step, see ``SDE.step_conditioning``)."""
  model_fn = get_model_fn(model, params, train=train, rng=rng, class_labels=class_labels,
                          context=context)

  def score_fn(x, i):
    labels, std = sde.step_conditioning(i)
    out = model_fn(x, labels)
    return out if std is None else -sde_lib.batch_mul(1.0 / std, out)
  return score_fn
