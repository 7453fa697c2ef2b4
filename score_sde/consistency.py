"""Consistency models (Song et al. 2023; iCT, Song & Dhariwal 2023) on any SDE of ``sde_lib``.

In the scaled parameterisation (y = x / m, sigma = s / m; ``sampling.schedules``) every family's
probability flow is the VE flow of y = x(0) + sigma z, and the consistency function maps any
point of a trajectory to its end: f(y, sigma) = y(sigma_min). Any score model gives one through
its denoiser D = (x + s^2 score) / m: f is the model's one DDIM (Euler) jump of the flow from sigma
to sigma_min, which builds in the boundary condition f(y, sigma_min) = y:

    f_theta(x, t) = D_theta + (sigma_min / sigma) (y - D_theta).

With EDM's preconditioned network (``model.precond='edm'``: D = c_skip y + c_out F(c_in y)) this
is f = c'_skip y + c'_out F with c'_out = sigma_d (sigma - sigma_min) / sqrt(sigma^2 + sigma_d^2),
the consistency models' c_out, and c'_skip = (sigma_d^2 + sigma sigma_min) / (sigma^2 + sigma_d^2)
(1 at sigma_min, EDM's c_skip above it): the network's input and output are unit-scaled at every
level. (The earlier form c_skip y + (1 - c_skip) D, c_skip = sigma_d^2 / ((sigma - sigma_min)^2 +
sigma_d^2), multiplies EDM's c_out by 1 - c_skip, about sigma^2 / sigma_d^2 below sigma_d: F had
to be ~4 at sigma = 0.3 and the 1-step samples of CD from the exact mixture score were 90% too
wide; benchmarks/RESULTS.md.)

Training pairs adjacent levels sigma_n < sigma_{n+1} of the Karras grid (rho = 7) between
sigma(eps) and sigma(T): from x_{n+1} = m_{n+1} x(0) + s_{n+1} z,

    distillation (CD):  y_n = one Heun step of the teacher's flow from sigma_{n+1} to sigma_n,
    training (CT):      y_n = x(0) + sigma_n z (the same z: the flow's one-sample estimate),

and the loss is lambda_n d(f_theta(y_{n+1}, sigma_{n+1}), sg f_theta(y_n, sigma_n)) with iCT's
choices: the target network is the student itself under stop-gradient (no EMA), lambda_n =
1 / (sigma_{n+1} - sigma_n), the pseudo-Huber metric d(a, b) = sqrt(||a - b||^2 + c^2) - c with
c = 0.00054 sqrt(dim) (or ||a - b||^2: ``METRICS``), and n drawn with probability proportional to the log-normal mass
(P_mean = -1.1, P_std = 2) between ln sigma_n and ln sigma_{n+1}. CT's number of levels doubles
over training (iCT's curriculum N(k) = min(s0 2^floor(k / K'), s1) + 1, s0 = 10, s1 = 1280).

Sampling (``multistep_sample``): x = f(prior); then for each further level sigma_k, re-noise
y = x + sqrt(sigma_k^2 - sigma_min^2) z and x = f(y, sigma_k): one evaluation per level.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sde_lib
from score_sde.sampling import schedules

P_MEAN, P_STD = -1.1, 2.0
CT_LEVELS = (10, 1280)
# The few-step training objectives (``training.objective``): consistency training and
# distillation, and MeanFlow. Their models draw only with the ``few_step`` sampling method.
OBJECTIVES = ('ct', 'cd', 'meanflow')


def _scale(sde, t):
  mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
  return mean[:, 0], std


def consistency_fn(score_fn, sde, x, t, sigma_min):
  """f(x, t) (B, ...) -> (B, ...): the consistency-model estimate of x(0), the DDIM jump
  D + (sigma_min / sigma) (y - D) of the score model's denoiser (module docstring)."""
  m, s = _scale(sde, t)
  sigma = s / m
  # y - D = -(s^2 / m) score: written out, it keeps its digits where D is close to y.
  residual = sde_lib.batch_mul(-s**2 / m, score_fn(x, t))
  return sde_lib.batch_mul(1.0 / m, x) - sde_lib.batch_mul(1.0 - sigma_min / sigma, residual)


def pseudo_huber(a, b):
  """sqrt(||a - b||^2 + c^2) - c per example, c = 0.00054 sqrt(dim): (B, ...) -> (B,)."""
  diff = (a - b).reshape(a.shape[0], -1)
  c = 0.00054 * math.sqrt(diff.shape[1])
  return jnp.sqrt(jnp.sum(diff**2, axis=-1) + c**2) - c


def squared_l2(a, b):
  """||a - b||^2 per example: (B, ...) -> (B,)."""
  return jnp.sum(((a - b)**2).reshape(a.shape[0], -1), axis=-1)


# The distance d of the consistency loss (``training.consistency_metric``). iCT's pseudo-Huber
# c is sized for images (c = 0.03 at 3072 dimensions); in 2-D it is 0.00076, far below the
# errors, so d is an L1 distance there, and 'l2' trains the toy students better (RESULTS.md).
METRICS = {'pseudo_huber': pseudo_huber, 'l2': squared_l2}


def level_times(sde, num_levels: int, eps: float) -> np.ndarray:
  """Increasing times (num_levels,) of the Karras (rho = 7) sigma grid from sigma(eps) to sigma(T)."""
  return schedules.get_time_grid('edm', sde, num_levels, eps)[::-1].copy()


def level_log_probs(sde, times) -> np.ndarray:
  """log p(n), n = 0..len(times) - 2: iCT's log-normal mass between adjacent levels."""
  log_sigma = np.log(schedules.scaled_sigma(sde, times))
  cdf = np.array([0.5 * (1 + math.erf((v - P_MEAN) / (math.sqrt(2) * P_STD))) for v in log_sigma])
  return np.log(np.maximum(np.diff(cdf), 1e-30))


def ct_num_levels(step, total_steps: int, s0: int = CT_LEVELS[0], s1: int = CT_LEVELS[1]):
  """iCT's curriculum: N(k) + 1 grid points at training step k (int; k may be traced)."""
  stage = max(1, total_steps // (int(math.log2(s1 / s0)) + 1))
  return jnp.minimum(s0 * 2**(step // stage), s1) + 1


def _heun_step(teacher_score_fn, sde, x, t_from, t_to):
  """One Heun step of the probability flow in scaled form, x at t_from -> x at t_to."""
  m0, s0 = _scale(sde, t_from)
  m1, s1 = _scale(sde, t_to)
  sig0, sig1 = s0 / m0, s1 / m1

  def slope(y, t, m, s):
    d = sde_lib.batch_mul(1.0 / m, sde_lib.batch_mul(m, y) + sde_lib.batch_mul(
        s**2, teacher_score_fn(sde_lib.batch_mul(m, y), t)))
    return sde_lib.batch_mul(1.0 / (s / m), y - d)
  y0 = sde_lib.batch_mul(1.0 / m0, x)
  k0 = slope(y0, t_from, m0, s0)
  y1 = y0 + sde_lib.batch_mul(sig1 - sig0, k0)
  k1 = slope(y1, t_to, m1, s1)
  return sde_lib.batch_mul(m1, y0 + sde_lib.batch_mul(0.5 * (sig1 - sig0), k0 + k1))


def _teacher_solve(teacher_score_fn, sde, x, t_from, t_to, eps, substeps: int):
  """``substeps`` Heun steps of the teacher's flow from t_from to t_to (B,), geometric in sigma."""
  if substeps == 1:
    return _heun_step(teacher_score_fn, sde, x, t_from, t_to)
  (m0, s0), (m1, s1) = _scale(sde, t_from), _scale(sde, t_to)
  ratio = (s1 / m1) / (s0 / m0)
  times = [t_from] + [_times_of_sigmas(sde, s0 / m0 * ratio**(j / substeps), eps)
                      for j in range(1, substeps)] + [t_to]
  for a, b in zip(times[:-1], times[1:]):
    x = _heun_step(teacher_score_fn, sde, x, a, b)
  return x


def consistency_losses(rng, score_fn, x, sde, *, num_levels, eps: float, teacher_score_fn=None,
                       index_offset=0, metric: str = 'pseudo_huber', level_ratio=None,
                       teacher_substeps: int = 1):
  """Per-example CD (with ``teacher_score_fn``) or CT losses, (B, ...) -> (B,).

  ``num_levels``: grid points (an int, or for CT a traced int from ``ct_num_levels``; levels
  are then computed on device by the same Karras formula). ``metric``: a ``METRICS`` name.
  ``level_ratio`` r (CD): instead of grid levels, ln sigma_{n+1} ~ N(P_mean, P_std^2) (clipped
  to the SDE's range) and sigma_n = max(sigma_{n+1} / r, sigma_min): any level is trained, and
  a chain from sigma_max to sigma_min has about ln(sigma_max / sigma_min) / ln r links, which
  is what the student's own errors compound over. ``teacher_substeps``: Heun steps of the
  teacher between the two levels (geometric in sigma), so that long links stay accurate.
  Randomness per global example index.
  """
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index_offset + jnp.arange(x.shape[0]))
  z = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), x.shape[1:]))(keys)
  if level_ratio is None:
    t_lo, t_hi = _adjacent_levels(sde, keys, num_levels, eps)
  else:
    t_lo, t_hi = _ratio_levels(sde, keys, level_ratio, eps)
  sigma_min = float(schedules.scaled_sigma(sde, np.array([eps]))[0])
  m_hi, s_hi = _scale(sde, t_hi)
  x_hi = sde_lib.batch_mul(m_hi, x) + sde_lib.batch_mul(s_hi, z)
  if teacher_score_fn is not None:
    x_lo = _teacher_solve(teacher_score_fn, sde, x_hi, t_hi, t_lo, eps, teacher_substeps)
  else:
    m_lo, s_lo = _scale(sde, t_lo)
    x_lo = sde_lib.batch_mul(m_lo, x) + sde_lib.batch_mul(s_lo, z)
  student = consistency_fn(score_fn, sde, x_hi, t_hi, sigma_min)
  target = jax.lax.stop_gradient(consistency_fn(score_fn, sde, x_lo, t_lo, sigma_min))
  sig_lo, sig_hi = (s / m for m, s in (_scale(sde, t_lo), (m_hi, s_hi)))
  return METRICS[metric](student, target) / (sig_hi - sig_lo)


def _adjacent_levels(sde, keys, num_levels, eps):
  """(t_n, t_{n+1}) per example, n drawn by iCT's log-normal level weights."""
  if isinstance(num_levels, int):
    times = level_times(sde, num_levels, eps)
    logits = jnp.asarray(level_log_probs(sde, times), jnp.float32)
    n = jax.vmap(lambda k: jax.random.categorical(k, logits))(keys)
    times = jnp.asarray(times, jnp.float32)
    return times[n], times[n + 1]
  return _adjacent_levels_traced(sde, keys, num_levels, eps)


def _ratio_levels(sde, keys, ratio: float, eps):
  """(t_n, t_{n+1}) per example: ln sigma_{n+1} ~ N(P_mean, P_std^2) within the SDE's range,
  sigma_n = max(sigma_{n+1} / ratio, sigma(eps)) (``consistency_losses``)."""
  s_min, s_max = schedules.scaled_sigma(sde, np.array([eps, sde.T]))
  normal = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 2)))(keys)
  # Just above sigma_min: sigma_{n+1} > sigma_n, so 1 / (sigma_{n+1} - sigma_n) is finite.
  sigma_hi = jnp.clip(jnp.exp(P_MEAN + P_STD * normal), s_min * 1.001, s_max)
  sigma_lo = jnp.maximum(sigma_hi / ratio, s_min)
  return _times_of_sigmas(sde, sigma_lo, eps), _times_of_sigmas(sde, sigma_hi, eps)


def _adjacent_levels_traced(sde, keys, num_levels, eps):
  """As ``_adjacent_levels`` for a traced number of levels (CT's curriculum): the Karras grid
  and the level weights on device, over the largest grid, masked to the first num_levels."""
  s_min, s_max = schedules.scaled_sigma(sde, np.array([eps, sde.T]))
  rho, most = 7.0, CT_LEVELS[1] + 1
  i = jnp.arange(most)
  ramp = jnp.minimum(i / (num_levels - 1), 1.0)
  sigmas = (s_min**(1 / rho) + ramp * (s_max**(1 / rho) - s_min**(1 / rho)))**rho
  cdf = jax.scipy.stats.norm.cdf((jnp.log(sigmas) - P_MEAN) / P_STD)
  mass = jnp.where(i[:-1] < num_levels - 1, jnp.diff(cdf), 0.0)
  logits = jnp.log(jnp.maximum(mass, 1e-30))
  n = jax.vmap(lambda k: jax.random.categorical(k, logits))(keys)
  times = _times_of_sigmas(sde, sigmas, eps)
  return times[n], times[n + 1]


def _times_of_sigmas(sde, sigmas, eps, iters: int = 40):
  lo, hi = jnp.full_like(sigmas, 0.0), jnp.full_like(sigmas, sde.T)

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    m, s = _scale(sde, mid)
    below = s / m < sigmas
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)
  lo, hi = jax.lax.fori_loop(0, iters, bisect, (lo, hi))
  return jnp.clip(0.5 * (lo + hi), eps, sde.T)


def multistep_sample(rng, score_fn, sde, shape, times, eps: float):
  """Consistency sampling at decreasing ``times`` (K,), times[0] = T: K evaluations, (B, ...)."""
  sigma_min = float(schedules.scaled_sigma(sde, np.array([eps]))[0])
  m, s = schedules.marginal_coeffs(sde, np.asarray(times))
  sigmas = s / m
  prior_key, loop_key = jax.random.split(rng)
  x = sde.prior_sampling(prior_key, shape)
  x0 = consistency_fn(score_fn, sde, x, jnp.full((shape[0],), times[0]), sigma_min)
  for k in range(1, len(times)):
    z = jax.random.normal(jax.random.fold_in(loop_key, k), shape)
    y = x0 + math.sqrt(max(sigmas[k]**2 - sigma_min**2, 0.0)) * z
    x0 = consistency_fn(score_fn, sde, m[k] * y, jnp.full((shape[0],), times[k]), sigma_min)
  return x0


# ---------------------------------------------------------------------------------------------
# MeanFlow (Geng et al. 2025): a network u(x, r, t) of the average velocity over [r, t].
# ---------------------------------------------------------------------------------------------

def meanflow_target(u_fn, x, r, t, v):
  """The MeanFlow identity's regression target, (B, ...):

      u_tgt = v - (t - r) d/dt u(x(t), r, t),    d/dt u = v . grad_x u + du/dt,

  the total derivative along the flow dx/dt = v taken by one ``jax.jvp`` with tangents (v, 0, 1).
  u_fn(x (B, ...), r (B,), t (B,)) -> (B, ...); r, t (B,); v (B, ...) the velocity at (x, t)."""
  u, du_dt = jax.jvp(u_fn, (x, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
  return u, v - sde_lib.batch_mul(t - r, du_dt)


def meanflow_pair_losses(rng, u_fn, x, sde, *, eps: float, ratio: float = 0.25,
                         index_offset=0, power: float = 1.0) -> jax.Array:
  """Per-example MeanFlow losses on any SDE of ``sde_lib``, (B, ...) -> (B,).

  Its probability flow is the average of the conditional velocity v = m'(t) x(0) + s'(t) z at
  x(t) = m(t) x(0) + s(t) z (for rectified flow, v = z - x(0) as in MeanFlow). Per example:
  t, t' ~ U(eps, T), (r, t) their order, r = t (the instantaneous velocity) except for a share
  ``ratio`` of examples; the target of ``meanflow_target`` with that v; the adaptively weighted
  loss of ``meanflow_losses``. Randomness per global example index (any number of devices)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index_offset + jnp.arange(x.shape[0]))
  draw = lambda j, f: jax.vmap(lambda k: f(jax.random.fold_in(k, j)))(keys)
  u_a, u_b = draw(0, jax.random.uniform), draw(2, jax.random.uniform)
  z = draw(1, lambda k: jax.random.normal(k, x.shape[1:]))
  apart = draw(3, lambda k: jax.random.bernoulli(k, ratio))
  times_a, times_b = (u * (sde.T - eps) + eps for u in (u_a, u_b))
  t = jnp.maximum(times_a, times_b)
  r = jnp.where(apart, jnp.minimum(times_a, times_b), t)
  (m, s), (dm, ds) = jax.jvp(lambda t: _scale(sde, t), (t,), (jnp.ones_like(t),))
  x_t = sde_lib.batch_mul(m, x) + sde_lib.batch_mul(s, z)
  v = sde_lib.batch_mul(dm, x) + sde_lib.batch_mul(ds, z)
  u, target = meanflow_target(u_fn, x_t, r, t, v)
  return meanflow_losses(u, target, power)


def meanflow_losses(u, target, power: float = 1.0, c: float = 1e-3):
  """MeanFlow's adaptively weighted loss ||u - sg(u_tgt)||^2 / sg(||.||^2 + c)^power: (B,)."""
  err = jnp.sum((u - jax.lax.stop_gradient(target)).reshape(u.shape[0], -1)**2, axis=-1)
  return err / jax.lax.stop_gradient(err + c)**power


def meanflow_sample(rng, u_fn, sde, shape, times):
  """MeanFlow's jumps along decreasing ``times`` (K + 1,), times[0] = T, times[-1] = eps:
  x_{k+1} = x_k - (t_k - t_{k+1}) u(x_k, t_{k+1}, t_k), K evaluations, (B, ...)."""
  x = sde.prior_sampling(rng, shape)
  for t_from, t_to in zip(times[:-1], times[1:]):
    t = jnp.full((shape[0],), t_from, jnp.float32)
    r = jnp.full((shape[0],), t_to, jnp.float32)
    x = x - (float(t_from) - float(t_to)) * u_fn(x, r, t)
  return x
