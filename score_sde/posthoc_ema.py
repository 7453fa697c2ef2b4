"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", EDM2, Sec. 3 and App. C): power-function EMA, and the EMA of any length rebuilt after
training from snapshots of two such EMAs.

Power-function profile. At training time t (in steps) the power EMA with exponent gamma > 0 is
the average of the parameter trajectory theta(tau) over tau in [0, t] with weight

    p_{gamma,t}(tau) = (gamma + 1) tau^gamma / t^(gamma + 1),

whose relative standard deviation (its width as a share of t) is

    sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))),                     (EDM2 eq. 123)

from 1/sqrt(12) = 0.289 at gamma = 0 (the plain average of all of training) down to 0 as
gamma -> inf. Given sigma_rel, gamma is the largest real root of
gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + (12 - sigma_rel^-2) = 0 (eq. 126). The paper
tracks sigma_rel = 0.05 (gamma = 16.97) and 0.10 (gamma = 6.94).

Tracking. After the t-th optimizer step (t = 1, 2, ...), with parameters theta_t,

    theta_hat_t = beta_t theta_hat_{t-1} + (1 - beta_t) theta_t,   beta_t = (1 - 1/t)^(gamma + 1),

so theta_hat_t = sum_{i<=t} w_i theta_i with w_i = (i^(gamma+1) - (i-1)^(gamma+1)) / t^(gamma+1)
(``step_weights``): exactly p_{gamma,t} integrated over (i - 1, i], i.e. the continuous profile
applied to the piecewise-constant trajectory theta(tau) = theta_i on (i - 1, i]. Unlike a
constant-rate EMA, the averaging length grows with training and the start is forgotten.

Reconstruction. Snapshots theta_hat_k of profiles (gamma_k, t_k) are stored during training. The
profile (gamma, t) is approximated by sum_k x_k p_{gamma_k,t_k}, with x the least-squares fit in
L2(0, inf): A x = b, A_kl = <p_k, p_l>, b_k = <p_k, p_{gamma,t}>, where for t_a <= t_b

    <p_{a,t_a}, p_{b,t_b}> = (a + 1)(b + 1) / ((a + b + 1) t_b) (t_a / t_b)^b          (eq. 151)

(symmetric otherwise). The EMA is then sum_k x_k theta_hat_k, x rescaled to sum to 1 so that a
constant trajectory is reproduced exactly. As both averages are linear in the trajectory, the
reconstruction differs from the EMA tracked directly with (gamma, t) by
sum_i (w_rec_i - w_i) theta_i, bounded by the profiles' L1 distance times the trajectory's
spread; ``relative_residual`` (the fitted profile's L2 distance to the asked one, as a share
of the asked one's norm) says how close the fit is. Snapshots taken every 1/24 of a run with
sigma_rel 0.05 and 0.10 fit sigma_rel 0.03-0.20 within 2%, 0.02 within 7%.

Everything here is host-side float64 NumPy except ``ema_beta`` / ``update``, which run inside the
jitted train step.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError

SIGMA_REL_MAX = 1.0 / math.sqrt(12.0)   # gamma = 0: the uniform average of the whole run
MAX_RELATIVE_RESIDUAL = 0.1             # a fitted profile further than this is another average


def sigma_rel_of_gamma(gamma):
  """Relative standard deviation of the power-function profile with exponent ``gamma`` (eq. 123)."""
  gamma = np.asarray(gamma, np.float64)
  return np.sqrt((gamma + 1) / ((gamma + 2)**2 * (gamma + 3)))


def gamma_of_sigma_rel(sigma_rel) -> float:
  """The exponent gamma > 0 whose profile has relative std ``sigma_rel`` in (0, 1/sqrt(12)):
  the largest real root of the cubic of eq. 126. ConfigError outside that range."""
  sigma_rel = float(sigma_rel)
  if not 0.0 < sigma_rel < SIGMA_REL_MAX:
    raise ConfigError(f'A post-hoc EMA length sigma_rel must lie in (0, {SIGMA_REL_MAX:.4f}) '
                      f'(1/sqrt(12): the plain average of the whole run), got {sigma_rel}.')
  c = sigma_rel**-2
  return float(np.max(np.roots([1.0, 7.0, 16.0 - c, 12.0 - c]).real))


def ema_beta(step, gamma) -> jax.Array:
  """beta_t = (1 - 1/t)^(gamma + 1) for the update after optimizer step t >= 1 (beta_1 = 0)."""
  return 1.0 - _ema_weight(step, gamma)


def _ema_weight(step, gamma) -> jax.Array:
  # 1 - beta_t as -expm1((gamma + 1) log1p(-1/t)): accurate in float32 at any t, where
  # 1 - (1 - 1/t)^(gamma + 1) loses most digits of 1/t once t reaches 10^5-10^6.
  t = jnp.asarray(step, jnp.float32)
  return -jnp.expm1((gamma + 1.0) * jnp.log1p(-1.0 / t))


def update(power_ema: Sequence[Any], params: Any, step, gammas: Sequence[float]) -> tuple:
  """One power-EMA update of each tracked tree, theta_hat <- beta theta_hat + (1 - beta) theta
  with beta = ``ema_beta(step, gammas[j])``; ``step`` (t >= 1) counts the optimizer steps
  taken, this one included. Pure; runs inside jit."""
  out = []
  for ema, gamma in zip(power_ema, gammas):
    w = _ema_weight(step, gamma)
    out.append(jax.tree.map(lambda e, p, w=w: e + w * (p - e), ema, params))
  return tuple(out)


def step_weights(gamma: float, step: int) -> np.ndarray:
  """(step,) weights w_i of theta_1..theta_step in the power EMA after ``step`` steps:
  w_i = (i^(gamma+1) - (i-1)^(gamma+1)) / step^(gamma+1), summing to 1."""
  u = np.arange(step + 1, dtype=np.float64) / step
  return np.diff(u**(gamma + 1.0))


def profile_inner_product(gamma_a, t_a, gamma_b, t_b) -> np.ndarray:
  """<p_{gamma_a,t_a}, p_{gamma_b,t_b}> in L2(0, inf) in closed form (eq. 151); broadcasts."""
  ga, ta, gb, tb = (np.asarray(v, np.float64) for v in (gamma_a, t_a, gamma_b, t_b))
  later = np.maximum(ta, tb)
  # The integral runs up to the earlier end; the later profile's exponent sets the ratio's power.
  power = np.where(ta <= tb, gb, ga)
  ratio = np.minimum(ta, tb) / later
  return (ga + 1) * (gb + 1) / ((ga + gb + 1) * later) * ratio**power


def solve_coefficients(gammas: Sequence[float], steps: Sequence[int], gamma: float,
                       step: int) -> tuple[np.ndarray, float]:
  """Weights x (K,) of the K snapshots (``gammas[k]``, ``steps[k]``) whose combination best fits
  the profile (``gamma``, ``step``) (module docstring), rescaled to sum to 1, and the fit's
  ``relative_residual`` ||sum_k x_k p_k - p|| / ||p||."""
  g, t = np.asarray(gammas, np.float64), np.asarray(steps, np.float64)
  A = profile_inner_product(g[:, None], t[:, None], g[None, :], t[None, :])
  b = profile_inner_product(g, t, gamma, step)
  x = np.linalg.lstsq(A, b, rcond=None)[0]
  x = x / np.sum(x)
  norm2 = float(profile_inner_product(gamma, step, gamma, step))
  residual2 = norm2 - 2.0 * x @ b + x @ A @ x
  return x, math.sqrt(max(residual2, 0.0) / norm2)


def combine(trees: Sequence[Any], coefficients: Sequence[float]) -> Any:
  """sum_k coefficients[k] trees[k], leafwise in float64, cast back to each leaf's dtype."""
  def weighted(*leaves):
    total = sum(float(c) * np.asarray(leaf, np.float64) for c, leaf in zip(coefficients, leaves))
    return total.astype(np.asarray(leaves[0]).dtype)
  return jax.tree.map(weighted, *trees)


def plan(profiles: Sequence[tuple[int, Sequence[float]]], sigma_rel: float,
         step: int | None = None, max_residual: float = MAX_RELATIVE_RESIDUAL
         ) -> tuple[list[tuple[int, int, float]], int, float]:
  """How to rebuild the power EMA of length ``sigma_rel`` at ``step`` (default: the last
  snapshot) from stored snapshots, given their ``profiles``: (step_k, sigma_rels_k) pairs, the
  snapshot at step_k holding one EMA per length in sigma_rels_k. Uses the snapshots at or
  before ``step``. Returns ([(step_k, j, coefficient)], step, relative residual). ConfigError if
  there are no snapshots, ``step`` is not a snapshot step, or the best fit is further than
  ``max_residual`` from the asked profile."""
  gamma = gamma_of_sigma_rel(sigma_rel)
  if not profiles:
    raise ConfigError('Post-hoc EMA needs power-EMA snapshots, and this run stored none: train '
                      'with training.posthoc_ema_sigma_rels set (e.g. (0.05, 0.10)).')
  steps = sorted(s for s, _ in profiles)
  step = steps[-1] if step is None else int(step)
  if step not in steps:
    raise ConfigError(f'No post-hoc EMA snapshot at step {step}; snapshot steps: {steps}.')
  used = [(s, j, rel) for s, rels in profiles if s <= step for j, rel in enumerate(rels)]
  x, residual = solve_coefficients([gamma_of_sigma_rel(rel) for _, _, rel in used],
                                   [s for s, _, _ in used], gamma, step)
  if not residual <= max_residual:
    rels = sorted({rel for _, _, rel in used})
    raise ConfigError(
        f'sigma_rel={sigma_rel} cannot be rebuilt from the stored snapshots (lengths {rels}, '
        f'{len([s for s in steps if s <= step])} steps up to {step}): the closest fit is '
        f'{residual:.0%} off the asked profile (limit {max_residual:.0%}); choose a length nearer '
        'the stored ones, or store snapshots more often (training.posthoc_ema_snapshot_freq).')
  return [(s, j, float(c)) for (s, j, _), c in zip(used, x)], step, residual


def reconstruct(snapshots: Sequence[tuple[int, Sequence[float], Sequence[Any]]],
                sigma_rel: float, step: int | None = None,
                max_residual: float = MAX_RELATIVE_RESIDUAL) -> tuple[Any, float]:
  """The power EMA of length ``sigma_rel`` at ``step`` rebuilt from in-memory ``snapshots``:
  (step_k, sigma_rels_k, trees_k) triples, trees_k[j] the EMA of length sigma_rels_k[j] at
  step_k (``plan`` says which are used and raises on bad input). Returns (params, relative
  residual)."""
  weights, _, residual = plan([(s, rels) for s, rels, _ in snapshots], sigma_rel, step,
                              max_residual)
  trees = {s: trees for s, _, trees in snapshots}
  return combine([trees[s][j] for s, j, _ in weights], [c for _, _, c in weights]), residual

