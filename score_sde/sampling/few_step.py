"""The ``few_step`` sampler: models trained for 1..K steps (``score_sde.consistency``).

On the decreasing grid t_0 = T > t_1 > ... > t_K = eps (``time_schedule``, default EDM's Karras
grid of K + 1 points, or an optimised grid file of K + 1 points):

  consistency models ('ct', 'cd'): x0 = f(x_T, T), then for k = 1..K-1 re-noise to t_k and
      x0 = f(m_k (x0 + sqrt(sigma_k^2 - sigma_min^2) z), t_k) (multistep consistency sampling);
  MeanFlow ('meanflow'): x_{k+1} = x_k - (t_k - t_{k+1}) u(x_k, t_{k+1}, t_k).

Either way K network evaluations. The model function handed to the sampler is the score network
(consistency models) or the two-time average velocity u(x, r, t) (``generation`` builds it from
the run's ``training.objective``).
"""
from __future__ import annotations

import jax.numpy as jnp

from score_sde import consistency
from score_sde.errors import ConfigError
from score_sde.sampling import schedules


def mismatch(objective, method: str) -> str | None:
  """Why sampling ``method`` cannot draw from a model of training.objective ``objective`` (a
  few-step model with another method, a score model with 'few_step'), or None if it can."""
  if objective in consistency.OBJECTIVES and method != 'few_step':
    return (f"a few-step model (training.objective={objective!r}) draws with 'few_step' only, "
            f'not {method!r}')
  if objective not in consistency.OBJECTIVES and method == 'few_step':
    return (f"'few_step' draws models trained for it (training.objective in "
            f'{list(consistency.OBJECTIVES)}), not training.objective={objective!r}')
  return None


def check_objective(objective) -> None:
  """ConfigError unless ``objective`` (the run's training.objective) trained a few-step model."""
  if mismatch(objective, 'few_step'):
    raise ConfigError(
        f"sampling.method='few_step' draws from models trained for it (training.objective in "
        f'{list(consistency.OBJECTIVES)}); this run was trained with training.objective='
        f"{objective!r}: use a solver such as 'unipc', 'dpm_solver' or 'heun'.")


def get_few_step_sampler(sde, shape, *, objective, num_steps: int = 1, eps: float = 1e-3,
                         time_schedule: str | None = None, rho: float = 7.0,
                         grid_path: str | None = None):
  """sampler(rng, model_fn) -> (samples (B, ...), nfe) in ``num_steps`` evaluations."""
  check_objective(objective)
  times = schedules.get_time_grid(time_schedule or 'edm', sde, num_steps + 1, eps, rho, grid_path)

  def sampler(rng, model_fn):
    if objective == 'meanflow':
      x = consistency.meanflow_sample(rng, model_fn, sde, shape, times)
    else:
      x = consistency.multistep_sample(rng, model_fn, sde, shape, times[:-1], eps)
    return x, jnp.asarray(num_steps, jnp.int32)
  return sampler
