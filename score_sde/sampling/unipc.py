"""UniPC (Zhao et al. 2023): the unified predictor (UniP) and corrector (UniC), multistep,
data-prediction form, orders 1-3, with the B(h) = h ('bh1') and B(h) = e^h - 1 ('bh2') variants.

In the (sigma, scaled-x) parameterisation of ``schedules`` (y = x / m, sigma = s / m,
lambda = -log sigma, D(y) = E[x(0) | x(t)]) one step from lambda_i to lambda_{i+1} with
h = lambda_{i+1} - lambda_i, step order k and the earlier evaluations D_{i-j} at r_j h behind
(r_j = (lambda_{i-j} - lambda_i) / h < 0, j = 1..k-1; r_k = 1 for the new point) is

    UniP:  y_{i+1}^p = e^{-h} y_i + (1 - e^{-h}) D_i - B(h) sum_{j<k} a_j (D_{i-j} - D_i) / r_j
    UniC:  y_{i+1}   = e^{-h} y_i + (1 - e^{-h}) D_i - B(h) [sum_{j<k} c_j (D_{i-j} - D_i) / r_j
                                                         + c_k (D(y_{i+1}^p) - D_i)]

where (with hh = -h and g_p = h phi_{p+1}(hh) p! / B(h) the paper's phi functions) c solves
R c = g with R_{pj} = r_j^{p-1} (p = 1..k), a solves the same system without the last row and
column, and the orders 1 and 2 use the paper's closed forms c = (1/2) and a = (1/2). The first
steps warm up with lower orders and the last ones lower the order again (``lower_order_final``);
the corrector's evaluation D(y^p_{i+1}) is reused as the next step's D_{i+1}, and the last
step skips the corrector (as the reference implementation does), so NFE = number of steps.

Every step's coefficients depend on the lambda grid only: they are computed once (NumPy on the
host, float64, for sampling; ``jax.numpy`` when a grid is being optimised through them) and the
device loop is one ``lax.scan`` with one score evaluation per step.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError
from score_sde.sampling import schedules
from score_sde.sampling.solvers import denoise

VARIANTS = ('bh1', 'bh2')


class UniPCCoeffs(NamedTuple):
  """Per-step linear coefficients (N steps), each step being

      y^p    = ratio y + pred[0] D_i + pred[1] D_{i-1} + pred[2] D_{i-2}
      y_next = ratio y + corr[0] D_i + corr[1] D_{i-1} + corr[2] D_{i-2} + corr[3] D(y^p).

  ratio (N,), pred (N, 3), corr (N, 4)."""
  ratio: jax.Array | np.ndarray
  pred: jax.Array | np.ndarray
  corr: jax.Array | np.ndarray


def _step_coeffs(lambdas, i, k, variant, xp):
  """(pred (3,), corr (4,)) of step i of order k: the UniP / UniC rows of the module docstring."""
  h = lambdas[i + 1] - lambdas[i]
  hh = -h
  h_phi_1 = xp.expm1(hh)
  b_h = hh if variant == 'bh1' else xp.expm1(hh)
  rks = [(lambdas[i - j] - lambdas[i]) / h for j in range(1, k)] + [xp.ones_like(h)]
  rows, g_vec, g, factorial = [], [], h_phi_1 / hh - 1.0, 1.0
  for p in range(1, k + 1):
    rows.append(xp.stack([r**(p - 1) for r in rks]))
    g_vec.append(g * factorial / b_h)
    factorial *= p + 1
    g = g / hh - 1.0 / factorial
  r_mat, g_vec = xp.stack(rows), xp.stack(g_vec)
  if k == 1:
    rhos_p, rhos_c = [], [0.5]
  else:
    rhos_c = list(xp.linalg.solve(r_mat, g_vec))
    rhos_p = [0.5] if k == 2 else list(xp.linalg.solve(r_mat[:-1, :-1], g_vec[:-1]))
  # In D-space: -h_phi_1 D_i, then each difference (D_{i-j} - D_i) / r_j scaled by -B(h) rho_j.
  zero = xp.zeros_like(h)
  pred = [-h_phi_1, zero, zero]
  corr = [-h_phi_1, zero, zero, zero]
  for j in range(1, k):
    w_p, w_c = b_h * rhos_p[j - 1] / rks[j - 1], b_h * rhos_c[j - 1] / rks[j - 1]
    pred[0], pred[j] = pred[0] + w_p, pred[j] - w_p
    corr[0], corr[j] = corr[0] + w_c, corr[j] - w_c
  corr[0], corr[3] = corr[0] + b_h * rhos_c[-1], corr[3] - b_h * rhos_c[-1]
  return xp.stack(pred), xp.stack(corr)


def unipc_coeffs(lambdas, order: int = 3, variant: str = 'bh1', xp=np) -> UniPCCoeffs:
  """Coefficients of UniPC-``order`` on the grid ``lambdas`` (N + 1,) increasing (lambda =
  -log sigma), in NumPy (``xp=np``) or ``jax.numpy`` (differentiable in ``lambdas``)."""
  if order not in (1, 2, 3):
    raise ConfigError(f'UniPC order must be one of [1, 2, 3], got {order}.')
  if variant not in VARIANTS:
    raise ConfigError(f'Unknown UniPC variant {variant!r}; valid: {list(VARIANTS)}.')
  n = lambdas.shape[0] - 1
  steps = [_step_coeffs(lambdas, i, min(order, i + 1, n - i), variant, xp) for i in range(n)]
  ratio = xp.exp(lambdas[:-1] - lambdas[1:])
  return UniPCCoeffs(ratio, xp.stack([p for p, _ in steps]), xp.stack([c for _, c in steps]))


def unipc_solve(score_fn, y, ts, m, s, coeffs: UniPCCoeffs):
  """Runs UniPC from y at ts[0] (scaled: y = x / m) over the grid ts (N + 1,) with marginal
  coefficients m, s (N + 1,) and ``coeffs`` for that grid; returns y at ts[-1] (B, ...).
  N score evaluations: one at the start, one per corrector (every step but the last)."""
  d0 = denoise(score_fn, y, ts[0], m[0], s[0])

  def corrected_step(carry, inputs):
    y, d0, d1, d2 = carry
    t, m_t, s_t, ratio, pred, corr = inputs
    y_pred = ratio * y + pred[0] * d0 + pred[1] * d1 + pred[2] * d2
    d_new = denoise(score_fn, y_pred, t, m_t, s_t)
    y = ratio * y + corr[0] * d0 + corr[1] * d1 + corr[2] * d2 + corr[3] * d_new
    return (y, d_new, d0, d1), None

  per_step = (ts[1:-1], m[1:-1], s[1:-1], coeffs.ratio[:-1], coeffs.pred[:-1], coeffs.corr[:-1])
  zeros = jnp.zeros_like(y)
  (y, d0, d1, d2), _ = jax.lax.scan(corrected_step, (y, d0, zeros, zeros), per_step)
  pred = coeffs.pred[-1]
  return coeffs.ratio[-1] * y + pred[0] * d0 + pred[1] * d1 + pred[2] * d2


def get_unipc_sampler(sde, shape, num_steps: int, order: int = 3, variant: str = 'bh1',
                      eps: float = 1e-3, time_schedule: str = 'logsnr', rho: float = 7.0,
                      grid_path: str | None = None):
  """UniPC-``order`` (``variant`` 'bh1' | 'bh2') from T to eps in ``num_steps`` steps = NFE."""
  ts = schedules.get_time_grid(time_schedule, sde, num_steps + 1, eps, rho, grid_path)
  m, s = schedules.marginal_coeffs(sde, ts)
  coeffs = unipc_coeffs(np.log(m / s), order, variant)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  ts32, m32, s32 = f32(ts), f32(m), f32(s)
  coeffs = UniPCCoeffs(*map(f32, coeffs))

  def sampler(rng, score_fn):
    y = sde.prior_sampling(rng, shape) / m[0]
    y = unipc_solve(score_fn, y, ts32, m32, s32, coeffs)
    return m[-1] * y, jnp.asarray(num_steps, jnp.int32)
  return sampler
