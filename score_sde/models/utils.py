"""From a network and its parameters to ``score_fn(x, t)``: the paper's noise conditioning.

Continuous-time training (Song et al. 2021):
  VP / sub-VP: the network sees label 999 t and predicts the noise z of x(t) = m x(0) + s z,
               so score = -output / s(t).
  VE:          the network sees label sigma(t) and predicts the score itself (NCSN++ divides by
               sigma inside when ``scale_by_sigma``).
Discrete-time training (DDPM / SMLD) uses integer labels: the DDPM timestep for VP, the SMLD
noise-level index (largest sigma first) for VE.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from score_sde import parameterization, sde_lib
from score_sde.errors import ConfigError
from score_sde.models import precond


def init_params(rng, model: nn.Module, input_shape) -> Any:
  """Initial parameters for per-example inputs of ``input_shape`` (without the batch axis)."""
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  labels = jnp.ones((1,), jnp.float32)
  params_rng, dropout_rng = jax.random.split(rng)
  variables = model.init({'params': params_rng, 'dropout': dropout_rng}, x, labels, train=False)
  return variables['params']


def get_model_fn(model: nn.Module, params, train: bool = False, rng=None) -> Callable:
  """``model_fn(x, labels)`` with the parameters bound (and a dropout key when training)."""
  def model_fn(x, labels):
    rngs = {'dropout': rng} if (train and rng is not None) else None
    return model.apply({'params': params}, x, labels, train=train, rngs=rngs)
  return model_fn


def _vp_conditioning(sde, t, continuous):
  """(labels, std) such that score = -output / std."""
  if continuous:
    return t * 999, sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]
  labels = t * (sde.N - 1)
  return labels, jnp.sqrt(1.0 - sde.alphas_cumprod)[jnp.round(labels).astype(jnp.int32)]


def _ve_conditioning(sde, t, continuous):
  """(labels, None): the network output is the score."""
  if continuous:
    return sde.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1], None
  return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32), None


def _rf_conditioning(sde, t, continuous):
  """Rectified flow: labels 999 t as VP; the bare network predicts the noise."""
  del continuous
  return t * 999, sde.std(t)


def _edm_conditioning(sde, t, continuous):
  """EDM sigma process: labels sigma(t) as VE; the bare network predicts the noise."""
  del continuous
  return sde.sigma(t), sde.sigma(t)


NOISE_CONDITIONING = {
    sde_lib.VPSDE: _vp_conditioning,
    sde_lib.SubVPSDE: _vp_conditioning,
    sde_lib.VESDE: _ve_conditioning,
    sde_lib.RectifiedFlow: _rf_conditioning,
    sde_lib.EDMSDE: _edm_conditioning,
}


def noise_conditioning(sde, t, continuous: bool = True):
  """The network's (B,) labels for times t, and the std that turns its output into a score."""
  if type(sde) not in NOISE_CONDITIONING:
    raise ValueError(f'No score parameterization for {type(sde).__name__}; valid: '
                     f'{[c.__name__ for c in NOISE_CONDITIONING]}.')
  return NOISE_CONDITIONING[type(sde)](sde, t, continuous)


def _parameterized_score_fn(sde, model: precond.Parameterized, params, train=False, rng=None,
                            continuous=True):
  """score_fn of a network predicting ``model.parameterization`` (continuous time only)."""
  if not continuous:
    raise ConfigError(f'model.parameterization={model.parameterization!r} needs '
                      'training.continuous=True (its conversions use the continuous m(t), s(t)).')
  model_fn = get_model_fn(model, params, train=train, rng=rng)

  def score_fn(x, t):
    out = model_fn(x, noise_conditioning(sde, t)[0])
    return parameterization.convert(out, x, model.parameterization, 'score',
                                    parameterization.coefficients(sde, t))
  return score_fn


# Preconditioned networks (models/precond.py) and their score functions, for any SDE.
PRECONDITIONED_SCORE_FNS = {precond.EDMPrecond: precond.get_score_fn}


def get_score_fn(sde, model: nn.Module, params, train: bool = False, continuous: bool = True,
                 rng=None) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """score_fn(x: (B, ...), t: (B,)) -> (B, ...), the model's estimate of grad_x log p_t(x)."""
  if type(model) is precond.Parameterized:   # a bare network read as another quantity
    return _parameterized_score_fn(sde, model, params, train=train, rng=rng, continuous=continuous)
  if type(model) in PRECONDITIONED_SCORE_FNS:   # the wrapper defines its own score (EDM)
    return PRECONDITIONED_SCORE_FNS[type(model)](sde, model, params, train=train, rng=rng)
  model_fn = get_model_fn(model, params, train=train, rng=rng)

  def score_fn(x, t):
    labels, std = noise_conditioning(sde, t, continuous)
    out = model_fn(x, labels)
    return out if std is None else -sde_lib.batch_mul(1.0 / std, out)
  return score_fn
