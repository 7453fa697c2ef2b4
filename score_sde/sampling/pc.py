"""The paper's predictor–corrector sampler: one ``lax.scan`` over N reverse-time steps.

Each step is corrector then predictor (Alg. 1 of Song et al. 2021 with its order of updates),
at t_i = T - i (T - eps) / (N - 1), i = 0..N-1, from x_T ~ prior. With ``noise_removal`` the
last step's noise-free mean is returned (the paper's ``denoise``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from score_sde.errors import ConfigError
from score_sde.sampling import correctors, predictors

# step(rng, x, t, score_fn) -> (x, x_mean): one corrector + predictor update at times t (B,).
Step = Callable[..., tuple[jax.Array, jax.Array]]


def get_pc_step(sde, predictor: str, corrector: str, snr: float, n_steps_each: int,
                probability_flow: bool = False) -> Step:
  """The pure PC update at one time; guidance and inpainting wrap this (or the score_fn)."""
  predict = predictors.get_predictor(predictor, sde, probability_flow)
  correct = correctors.get_corrector(corrector)

  def step(rng, x, t, score_fn):
    k_corr, k_pred = jax.random.split(rng)
    x, _ = correct(k_corr, x, t, sde, score_fn, snr, n_steps_each)
    return predict(k_pred, x, t, sde, score_fn)
  return step


def _check_discrete_chain(sde, predictor: str, corrector: str):
  """The DDPM chain needs beta_i = beta(t_i) / N < 1 (else sqrt(1 - beta_i) is NaN), so VP and
  sub-VP's reverse diffusion, ancestral sampling and Langevin alphas need enough steps."""
  uses_chain = (predictor in ('reverse_diffusion', 'ancestral_sampling')
                or corrector in ('langevin', 'ald'))
  if not uses_chain or sde.chain_alphas is None:
    return
  with jax.ensure_compile_time_eval():   # also when the sampler is built under a jit trace
    min_alpha = float(jnp.min(sde.chain_alphas))
    max_beta = 1.0 - min_alpha
  if min_alpha <= 0.0:
    raise ConfigError(
        f'num_steps={sde.N} is too few for the discrete chain of {type(sde).__name__} used by '
        f'predictor={predictor!r} / corrector={corrector!r}: its betas reach '
        f'{max_beta:.3g} >= 1. Use more steps, or euler_maruyama with '
        "corrector='none'.")


def get_pc_sampler(sde, shape, predictor: str = 'euler_maruyama', corrector: str = 'none',
                   snr: float = 0.16, n_steps_each: int = 1, noise_removal: bool = True,
                   eps: float = 1e-3, num_steps: int | None = None, probability_flow: bool = False,
                   wrap_step: Callable[[Step], Step] | None = None):
  """``sampler(rng, score_fn) -> (samples of ``shape``, nfe)`` for the PC method.

  ``num_steps`` (default ``sde.N``) replaces the SDE's N, so the discrete chains used by
  reverse diffusion, ancestral sampling and the Langevin alphas have exactly num_steps levels.
  ``probability_flow`` makes the predictor step the probability-flow ODE (the paper's option).
  ``wrap_step(step) -> step`` lets controllable generation alter each update without a new loop.
  """
  if num_steps is not None and num_steps != sde.N:
    sde = dataclasses.replace(sde, N=num_steps)
  _check_discrete_chain(sde, predictor, corrector)
  step = get_pc_step(sde, predictor, corrector, snr, n_steps_each, probability_flow)
  if wrap_step is not None:
    step = wrap_step(step)
  nfe = sde.N * (predictors.predictor_nfe(predictor)
                 + correctors.corrector_nfe(corrector, n_steps_each))

  def sampler(rng, score_fn):
    prior_key, loop_key = jax.random.split(rng)
    x = sde.prior_sampling(prior_key, shape)
    timesteps = jnp.linspace(sde.T, eps, sde.N)

    def body(carry, inputs):
      t, i = inputs
      vec_t = jnp.full((shape[0],), t)
      return step(jax.random.fold_in(loop_key, i), carry[0], vec_t, score_fn), None

    (x, x_mean), _ = jax.lax.scan(body, (x, x), (timesteps, jnp.arange(sde.N)))
    return (x_mean if noise_removal else x), jnp.asarray(nfe, jnp.int32)
  return sampler
