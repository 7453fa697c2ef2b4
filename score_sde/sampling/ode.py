"""Probability-flow ODE sampler: dx/dt = f(x, t) - g(t)^2 score(x, t) / 2 from T to eps, in diffrax.

The whole batch is one ODE state (as the paper's RK45 on the flattened batch): Dopri5 with a PID
step-size controller at tolerances ``rtol``/``atol``. The reported NFE counts the score
evaluations diffrax actually makes (``ode_nfe``); ``noise_removal`` adds one reverse-diffusion
step at eps returning its mean (one more evaluation, counted).
"""
from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from score_sde.sampling import predictors

# Dopri5 has 7 stages, the first being the previous step's last (FSAL): 6 new evaluations per
# attempted step, accepted or rejected, plus one for the initial FSAL stage (diffrax 0.7 picks
# the first step size from the first stage it computes, at no extra cost).
_STAGES_PER_STEP = 6
_START_EVALS = 1


def ode_nfe(stats) -> jax.Array:
  """Score evaluations made by the solve with diffrax ``stats`` (checked by a counting test)."""
  return _START_EVALS + _STAGES_PER_STEP * stats['num_steps']


def get_ode_sampler(sde, shape, rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-3,
                    noise_removal: bool = True, max_steps: int = 4096):
  """``sampler(rng, score_fn) -> (samples of ``shape``, nfe)`` integrating the probability flow."""

  def sampler(rng, score_fn):
    prior_key, denoise_key = jax.random.split(rng)
    x_T = sde.prior_sampling(prior_key, shape)
    flow = sde.reverse(score_fn, probability_flow=True)

    def vector_field(t, x, args):
      return flow.sde(x, jnp.full((shape[0],), t))[0]

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), diffrax.Dopri5(scan_kind='lax'), t0=sde.T, t1=eps,
        dt0=None, y0=x_T, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True), max_steps=max_steps,
        # Forward solve only: a plain while loop and stage loop, no reverse-mode checkpointing
        # (2-3x faster on CPU, see benchmarks/RESULTS.md, Likelihood).
        adjoint=diffrax.ForwardMode())
    x = sol.ys[0]
    nfe = ode_nfe(sol.stats)
    if noise_removal:
      _, x = predictors.reverse_diffusion(denoise_key, x, jnp.full((shape[0],), eps), sde, score_fn)
      nfe = nfe + 1
    return x, jnp.asarray(nfe, jnp.int32)
  return sampler
