"""Forward SDEs of Song et al. (2021) and their reverse-time / probability-flow counterparts.

Every SDE here is linear in x,

    dx = f(t) x dt + g(t) dw,        t in [0, T],

so its perturbation kernel is Gaussian, p_0t(x(t) | x(0)) = N(m(t) x(0), s(t)^2 I), and
``marginal_prob`` returns (m(t) x(0), s(t)). Shapes: ``x`` is (B, ...) and ``t`` is (B,).

An SDE is a small immutable object with pure methods; it can be closed over by ``jax.jit``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_mul(a: jax.Array, x: jax.Array) -> jax.Array:
  """Multiplies a per-example (B,) array into x of shape (B, ...)."""
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def _sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _std_normal_logp(z: jax.Array, scale: float | jax.Array = 1.0) -> jax.Array:
  """log N(z; 0, scale^2 I), summed over all but the batch axis: (B, ...) -> (B,)."""
  d = np.prod(z.shape[1:])
  return (-0.5 * d * jnp.log(2 * np.pi * scale**2)
          - _sum_except_batch(z**2) / (2 * scale**2))


class SDE:
  """The base of every forward SDE here; subclasses are frozen dataclasses with a field ``N``
  (levels of the discrete chain, >= 1, checked here) that define ``sde``, ``marginal_prob``,
  ``prior_sampling``, ``prior_logp`` and ``discretize`` (the paper's names).

  What differs between SDEs outside those formulas is a method here, overridden where an SDE
  has it (a subclass inherits its parent's): how a network is conditioned on the noise level
  (``noise_conditioning``, and ``step_conditioning`` for discrete-time training), the discrete
  chain's kernel (``discrete_kernel``), its ancestral step (``ancestral_step``), the chain's
  alphas (``chain_alphas``) and the training distribution of noise levels
  (``training_log_sigma``). ``T``, ``reverse`` and ``sigma_of_t`` are defined once, here.
  """
  T = 1.0                       # the end time; RectifiedFlow ends earlier
  training_log_sigma = None     # (P_mean, P_std): ln sigma ~ N(P_mean, P_std^2) in training
  chain_alphas = None           # alpha_i = 1 - beta_i of a DDPM-like discrete chain, (N,)

  def __post_init__(self):
    self.check()
    if self.N < 1:
      raise ConfigError(f'N must be >= 1, got {self.N}.')

  def check(self) -> None:
    """ConfigError for parameters out of range (a subclass's own checks)."""

  @classmethod
  def from_config(cls, m) -> 'SDE':
    """The SDE of ``config.model`` ``m`` (its num_scales and the SDE's own fields)."""
    raise NotImplementedError(f'{cls.__name__} defines no from_config.')

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> 'ReverseSDE':
    return ReverseSDE(self, score_fn, probability_flow)

  def sigma_of_t(self, t):
    """The EDM noise level s(t) / m(t) of time t, (B,)."""
    mean, std = self.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    return std / mean[:, 0]

  def discrete_index(self, t):
    """Index i of t in the N-level discrete chain, i = floor(t (N - 1) / T) (the paper's rounding)."""
    return (t * (self.N - 1) / self.T).astype(jnp.int32)

  def noise_conditioning(self, t, continuous: bool = True):
    """(labels (B,), std): what a network is conditioned on at times t (B,), and the std that
    turns its output into a score (score = -output / std; None: the output is the score)."""
    raise ConfigError(f'{type(self).__name__} has no network noise conditioning; define its '
                      'noise_conditioning (sde_lib).')

  def step_conditioning(self, i):
    """(labels, std) for integer steps i (B,) of the discrete chain (discrete-time training)."""
    raise ConfigError(f'Discrete-time training is defined for the VP (DDPM) and VE (SMLD) chains, '
                      f'not {type(self).__name__}; set training.continuous=True.')

  def discrete_kernel(self, i):
    """(m_i, s_i), each (B,): the discrete chain's kernel x_i = m_i x_0 + s_i z."""
    return self.step_conditioning(i)   # raises the same error

  def ancestral_step(self, rng, x, t, score_fn):
    """One ancestral-sampling step of the discrete chain: (x, x_mean)."""
    raise ConfigError(f"Predictor 'ancestral_sampling' exists for the VP (DDPM) and VE (SMLD) "
                      f'chains only, not {type(self).__name__}; use one of: euler_maruyama, '
                      'reverse_diffusion, none.')


# ---------------------------------------------------------------------------------------------
# Noise schedules of the variance-preserving family.
#
# The VP and sub-VP SDEs are defined by beta(t) and its integral B(t) = int_0^t beta(s) ds;
# the mean coefficient is m(t) = exp(-B(t)/2) for both.
# ---------------------------------------------------------------------------------------------

BETA_SCHEDULES = ('linear', 'cosine', 'scaled_linear')
COSINE_S = 0.008          # Nichol & Dhariwal's offset.
COSINE_T_MAX = 0.9946     # Phase cut-off that keeps beta(1) finite (as in DPM-Solver's cosine VP).


def _cosine_phase(t):
  return 0.5 * math.pi * (t * COSINE_T_MAX + COSINE_S) / (1.0 + COSINE_S)


def _cosine_log_alpha_bar(t, xp=jnp):
  """log alpha_bar(t) = 2 log(cos phi(t) / cos phi(0)); ``xp`` is jnp, or np for constants."""
  return 2.0 * (xp.log(xp.cos(_cosine_phase(t))) - math.log(math.cos(_cosine_phase(0.0))))


@dataclasses.dataclass(frozen=True)
class _VPFamily(SDE):
  """Shared schedule for VP and sub-VP. ``beta_schedule`` is 'linear' (the paper), 'cosine' or
  'scaled_linear' (Stable Diffusion's, with beta_min 0.85, beta_max 12 for its 0.00085..0.012).

  linear:  beta(t) = beta_min + t (beta_max - beta_min),  B(t) = beta_min t + (beta_max - beta_min) t^2 / 2.
  scaled_linear: beta(t) = (a + t d)^2, a = sqrt(beta_min), d = sqrt(beta_max) - a,
           B(t) = ((a + t d)^3 - a^3) / (3 d); the chain's beta_i = (linspace of sqrt(beta / N))^2.
  cosine:  alpha_bar(t) = cos^2(phi(t)) / cos^2(phi(0)),  phi(t) = pi/2 (t c + s) / (1 + s),
           B(t) = -log alpha_bar(t),  beta(t) = pi c / (1 + s) tan(phi(t))   (c = 0.9946, s = 0.008).
  """
  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000
  beta_schedule: str = 'linear'

  @classmethod
  def from_config(cls, m):
    return cls(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales,
               beta_schedule=m.get('beta_schedule', 'linear'))

  def check(self):
    if self.beta_schedule not in BETA_SCHEDULES:
      raise ConfigError(f'Unknown beta_schedule {self.beta_schedule!r}; valid: '
                        f'{", ".join(map(repr, BETA_SCHEDULES))}.')

  def _sqrt_ends(self) -> tuple[float, float]:
    a = math.sqrt(self.beta_min)
    return a, math.sqrt(self.beta_max) - a

  def beta(self, t):
    if self.beta_schedule == 'linear':
      return self.beta_min + t * (self.beta_max - self.beta_min)
    if self.beta_schedule == 'scaled_linear':
      a, d = self._sqrt_ends()
      return (a + t * d)**2
    return math.pi * COSINE_T_MAX / (1.0 + COSINE_S) * jnp.tan(_cosine_phase(t))

  def integrated_beta(self, t):
    """B(t) = int_0^t beta(s) ds = -2 log m(t)."""
    if self.beta_schedule == 'linear':
      return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
    if self.beta_schedule == 'scaled_linear':
      a, d = self._sqrt_ends()
      return ((a + t * d)**3 - a**3) / (3 * d)
    return -_cosine_log_alpha_bar(t)

  @property
  def discrete_betas(self) -> jax.Array:
    """beta_i of the N-step discrete chain (DDPM's betas for the linear schedule)."""
    if self.beta_schedule == 'linear':
      return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)
    if self.beta_schedule == 'scaled_linear':
      return jnp.linspace(math.sqrt(self.beta_min / self.N), math.sqrt(self.beta_max / self.N),
                          self.N)**2
    log_alpha_bar = _cosine_log_alpha_bar(np.arange(self.N + 1, dtype=np.float64) / self.N, np)
    return jnp.asarray(np.clip(1.0 - np.exp(np.diff(log_alpha_bar)), 0.0, 0.999), jnp.float32)

  @property
  def alphas(self) -> jax.Array:
    return 1.0 - self.discrete_betas

  @property
  def alphas_cumprod(self) -> jax.Array:
    return jnp.cumprod(self.alphas)

  @property
  def chain_alphas(self) -> jax.Array:
    return self.alphas

  def log_mean_coeff(self, t):
    return -0.5 * self.integrated_beta(t)

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape)

  def prior_logp(self, z):
    return _std_normal_logp(z)

  def _continuous_conditioning(self, t):
    """Labels 999 t and the continuous s(t): score = -output / s(t)."""
    return t * 999, self.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1]


@dataclasses.dataclass(frozen=True)
class VPSDE(_VPFamily):
  """Variance-preserving SDE (the continuous DDPM): dx = -beta(t)/2 x dt + sqrt(beta(t)) dw.

  Marginal: m(t) = exp(-B(t)/2), s(t)^2 = 1 - exp(-B(t)). Prior N(0, I).
  """

  def sde(self, x, t):
    beta_t = self.beta(t)
    return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t)

  def marginal_prob(self, x, t):
    lmc = self.log_mean_coeff(t)
    return batch_mul(jnp.exp(lmc), x), jnp.sqrt(-jnp.expm1(2.0 * lmc))

  def discretize(self, x, t):
    """DDPM's chain: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z, as x_i = x_{i-1} + f + G z."""
    i = self.discrete_index(t)
    beta = self.discrete_betas[i]
    f = batch_mul(jnp.sqrt(self.alphas[i]), x) - x
    return f, jnp.sqrt(beta)

  def noise_conditioning(self, t, continuous=True):
    if continuous:
      return self._continuous_conditioning(t)
    # The paper's get_score_fn: label t (N - 1) and the noise level of its integer part, the step
    # whose beta_i the ancestral predictor and discretize() also use (discrete_index).
    labels = t * (self.N - 1)
    return labels, jnp.sqrt(1.0 - self.alphas_cumprod)[labels.astype(jnp.int32)]

  def step_conditioning(self, i):
    """DDPM: label i, std sqrt(1 - alpha_bar_i)."""
    return i.astype(jnp.float32), jnp.sqrt(1.0 - self.alphas_cumprod)[i]

  def discrete_kernel(self, i):
    ac = self.alphas_cumprod[i]
    return jnp.sqrt(ac), jnp.sqrt(1.0 - ac)

  def ancestral_step(self, rng, x, t, score_fn):
    """DDPM's ancestral step: x <- (x + beta_i score) / sqrt(1 - beta_i) + sqrt(beta_i) z."""
    beta = self.discrete_betas[self.discrete_index(t)]
    x_mean = batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score_fn(x, t)))
    z = jax.random.normal(rng, x.shape, x.dtype)
    return x_mean + batch_mul(jnp.sqrt(beta), z), x_mean


@dataclasses.dataclass(frozen=True)
class SubVPSDE(_VPFamily):
  """Sub-VP SDE: dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dw.

  Marginal: m(t) = exp(-B(t)/2), s(t) = 1 - exp(-B(t)) (its variance is below the VP one).
  """

  def sde(self, x, t):
    beta_t = self.beta(t)
    discount = -jnp.expm1(-2.0 * self.integrated_beta(t))
    return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t * discount)

  def marginal_prob(self, x, t):
    lmc = self.log_mean_coeff(t)
    return batch_mul(jnp.exp(lmc), x), -jnp.expm1(2.0 * lmc)

  def discretize(self, x, t):
    """The DDPM chain with the sub-VP discount on its noise (the paper code has none):

    x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i (1 - exp(-2 B(t_i)))) z.
    Its mean matches VP's and its per-step variance is the continuous one's, beta(t) dt discounted.
    """
    i = self.discrete_index(t)
    beta = self.discrete_betas[i]
    discount = -jnp.expm1(-2.0 * self.integrated_beta(t))
    f = batch_mul(jnp.sqrt(self.alphas[i]), x) - x
    return f, jnp.sqrt(beta * discount)

  def noise_conditioning(self, t, continuous=True):
    """The paper scores sub-VP models with continuous conditioning even when ``continuous`` is
    False (it has no discrete sub-VP chain)."""
    return self._continuous_conditioning(t)


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
  """Variance-exploding SDE (continuous SMLD): dx = sigma(t) sqrt(2 log(sigma_max/sigma_min)) dw,

  sigma(t) = sigma_min (sigma_max/sigma_min)^t.  Marginal: m(t) = 1, s(t) = sigma(t).
  Prior N(0, sigma_max^2 I).
  """
  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000

  @classmethod
  def from_config(cls, m):
    return cls(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)

  def check(self):
    if not 0 < self.sigma_min < self.sigma_max:
      raise ConfigError(f'Need 0 < sigma_min < sigma_max, got {self.sigma_min}, '
                        f'{self.sigma_max}.')

  @property
  def discrete_sigmas(self) -> jax.Array:
    """SMLD's N noise levels, geometric from sigma_min to sigma_max."""
    return jnp.exp(jnp.linspace(np.log(self.sigma_min), np.log(self.sigma_max), self.N))

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min)**t

  def sde(self, x, t):
    g = self.sigma(t) * np.sqrt(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)))
    return jnp.zeros_like(x), g

  def marginal_prob(self, x, t):
    return x, self.sigma(t)

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape) * self.sigma_max

  def prior_logp(self, z):
    return _std_normal_logp(z, self.sigma_max)

  def discretize(self, x, t):
    """SMLD's chain: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z (sigma_{-1} = 0)."""
    sigma, adjacent = self._adjacent_sigmas(self.discrete_index(t))
    return jnp.zeros_like(x), jnp.sqrt(sigma**2 - adjacent**2)

  def _adjacent_sigmas(self, i):
    """(sigma_i, sigma_{i-1}) with sigma_{-1} = 0."""
    adjacent = jnp.where(i == 0, 0.0, self.discrete_sigmas[jnp.maximum(i - 1, 0)])
    return self.discrete_sigmas[i], adjacent

  def noise_conditioning(self, t, continuous=True):
    """(labels, None): the network output is the score."""
    if continuous:
      return self.marginal_prob(jnp.zeros((t.shape[0], 1)), t)[1], None
    return jnp.round((self.T - t) * (self.N - 1)).astype(jnp.int32), None

  def step_conditioning(self, i):
    """SMLD: label N - 1 - i (its labels count noise levels from the largest), no std."""
    return self.N - 1 - i, None

  def discrete_kernel(self, i):
    return jnp.ones_like(self.discrete_sigmas[i]), self.discrete_sigmas[i]

  def ancestral_step(self, rng, x, t, score_fn):
    """SMLD's ancestral step between noise levels sigma_i > sigma_{i-1} (sigma_{-1} = 0):

    x <- x + (sigma_i^2 - sigma_{i-1}^2) score + sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) z.
    """
    sigma, adjacent = self._adjacent_sigmas(self.discrete_index(t))
    x_mean = x + batch_mul(sigma**2 - adjacent**2, score_fn(x, t))
    std = jnp.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
    z = jax.random.normal(rng, x.shape, x.dtype)
    return x_mean + batch_mul(std, z), x_mean


# ---------------------------------------------------------------------------------------------
# Interpolant processes (stochastic-interpolant view): any x(t) = m(t) x(0) + s(t) z is the
# marginal of the linear SDE dx = f(t) x dt + g(t) dw with
#
#     f = d log m / dt,        g^2 = d s^2 / dt - 2 f s^2,
#
# since the mean obeys dm/dt = f m and the variance d(s^2)/dt = 2 f s^2 + g^2 (Ito).
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Interpolant(SDE):
  """Shared methods; a subclass defines ``mean_coeff`` m(t), ``std`` s(t), ``drift_coeff`` f(t),
  ``diffusion_sq`` g(t)^2 in closed form, ``T`` and ``prior_std`` (the prior is N(0, s(T)^2 I))."""

  def sde(self, x, t):
    return batch_mul(self.drift_coeff(t), x), jnp.sqrt(self.diffusion_sq(t))

  def marginal_prob(self, x, t):
    return batch_mul(self.mean_coeff(t), x), self.std(t)

  @property
  def prior_std(self) -> float:
    return float(self.std(np.float64(self.T)))

  def prior_sampling(self, rng, shape):
    return jax.random.normal(rng, shape) * self.prior_std

  def prior_logp(self, z):
    return _std_normal_logp(z, self.prior_std)

  def discretize(self, x, t):
    """The exact Gaussian transition between adjacent levels of an N-level chain (what DDPM's
    chain is for VP): level i sits at t_i = (i + 1) T / N, level -1 is the data (m = 1, s = 0), and

        x_i = a_i x_{i-1} + sqrt(s_i^2 - a_i^2 s_{i-1}^2) z,     a_i = m_i / m_{i-1},

    so the chain's marginal at every level is exactly the process's. t maps to the nearest
    level, i = round(t N / T) - 1 (so t = eps, the samplers' last time, is level 0: a full
    denoising step). Returned as x_i = x_{i-1} + f + G z.
    """
    i = jnp.clip(jnp.round(t * self.N / self.T) - 1, 0, self.N - 1)
    t_i, t_prev = (i + 1) * self.T / self.N, i * self.T / self.N
    first = i == 0
    m_prev = jnp.where(first, 1.0, self.mean_coeff(t_prev))
    s_prev = jnp.where(first, 0.0, self.std(t_prev))
    a = self.mean_coeff(t_i) / m_prev
    f = batch_mul(a - 1.0, x)
    return f, jnp.sqrt(jnp.maximum(self.std(t_i)**2 - (a * s_prev)**2, 0.0))


@dataclasses.dataclass(frozen=True)
class RectifiedFlow(_Interpolant):
  """The rectified-flow / flow-matching linear interpolant x(t) = (1 - t) x(0) + t z:

      m(t) = 1 - t,   s(t) = t,   f(t) = -1 / (1 - t),   g(t)^2 = 2 t / (1 - t),

      dx = -x / (1 - t) dt + sqrt(2 t / (1 - t)) dw,     t in [0, T],  T = ``t_max`` < 1.

  Its velocity field dx/dt = E[z - x(0) | x(t)] is the probability-flow drift. At t = 1, m = 0:
  f and g blow up and the score cannot be recovered from a velocity (or x0) prediction, so the
  process ends at ``t_max`` < 1 and its prior is N(0, t_max^2 I) (p_T's mean (1 - t_max) x(0)
  is dropped, as VP drops exp(-B(1)/2) x(0) ~ 0.007 x(0)). Euler-Maruyama on the reverse SDE is
  stable for steps dt << (1 - t_max) / 2: 0.99 suits the paper's N = 1000.
  """
  t_max: float = 0.99
  N: int = 1000

  @classmethod
  def from_config(cls, m):
    return cls(t_max=m.t_max, N=m.num_scales)

  def check(self):
    if not 0.0 < self.t_max < 1.0:
      raise ConfigError(
          f'RectifiedFlow t_max must lie in (0, 1), got {self.t_max}: at t = 1, m(t) = 1 - t = 0, '
          'so the drift -1/(1 - t), the diffusion and the score of a velocity are undefined.')

  @property
  def T(self) -> float:
    return self.t_max

  def mean_coeff(self, t):
    return 1.0 - t

  def std(self, t):
    return t

  def drift_coeff(self, t):
    return -1.0 / (1.0 - t)

  def diffusion_sq(self, t):
    return 2.0 * t / (1.0 - t)

  def noise_conditioning(self, t, continuous=True):
    """Labels 999 t as VP; the bare network predicts the noise."""
    return t * 999, self.std(t)


@dataclasses.dataclass(frozen=True)
class EDMSDE(_Interpolant):
  """EDM's sigma process (Karras et al. 2022): x(t) = x(0) + sigma(t) z on t in [0, 1], with

      sigma(t) = (a + t (b - a))^rho,   a = sigma_min^(1/rho),  b = sigma_max^(1/rho),
      m(t) = 1,  s(t) = sigma(t),  f(t) = 0,
      g(t)^2 = d sigma^2 / dt = 2 rho (b - a) sigma(t)^(2 - 1/rho).

  sigma(t) is EDM's step schedule (its eq. 5), so a uniform time grid, e.g. the PC sampler's,
  steps through EDM's noise levels. The probability flow is EDM's ODE up to a change of time.
  Prior N(0, sigma_max^2 I). Training draws ln sigma ~ N(P_mean, P_std^2) (``losses``).
  """
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  rho: float = 7.0
  N: int = 1000
  P_mean: float = -1.2
  P_std: float = 1.2

  @classmethod
  def from_config(cls, m):
    return cls(sigma_min=m.sigma_min, sigma_max=m.sigma_max, rho=m.rho, N=m.num_scales,
               P_mean=m.P_mean, P_std=m.P_std)

  def check(self):
    if not 0 < self.sigma_min < self.sigma_max:
      raise ConfigError(f'EDMSDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, '
                        f'{self.sigma_max}.')
    if not self.rho > 0 or not self.P_std > 0:
      raise ConfigError(f'EDMSDE needs rho > 0 and P_std > 0, got {self.rho}, {self.P_std}.')

  @property
  def training_log_sigma(self) -> tuple[float, float]:
    return self.P_mean, self.P_std

  def _ramp(self, t):
    a, b = self.sigma_min**(1 / self.rho), self.sigma_max**(1 / self.rho)
    return a + t * (b - a), b - a

  def sigma(self, t):
    return self._ramp(t)[0]**self.rho

  def mean_coeff(self, t):
    return jnp.ones_like(t)

  def std(self, t):
    return self.sigma(t)

  def drift_coeff(self, t):
    return jnp.zeros_like(t)

  def diffusion_sq(self, t):
    ramp, slope = self._ramp(t)
    return 2.0 * self.rho * slope * ramp**(2 * self.rho - 1)

  def noise_conditioning(self, t, continuous=True):
    """Labels sigma(t) as VE; the bare network predicts the noise."""
    return self.sigma(t), self.sigma(t)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """The reverse-time SDE of Anderson (1982), or with ``probability_flow`` the ODE with the same marginals:

      dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dw_bar          (reverse SDE)
      dx = [f(x, t) - g(t)^2 score(x, t) / 2] dt                     (probability flow)

  ``sde`` returns the reverse drift and diffusion, to be integrated from t = T down to 0.
  ``discretize`` does the same for the forward SDE's discretization (reverse diffusion).
  """
  forward: SDE
  score_fn: ScoreFn
  probability_flow: bool = False

  @property
  def T(self):
    return self.forward.T

  @property
  def N(self):
    return self.forward.N

  def _reverse(self, f, g, x, t):
    score = self.score_fn(x, t)
    weight = 0.5 if self.probability_flow else 1.0
    drift = f - batch_mul(g**2, score) * weight
    return drift, jnp.zeros_like(g) if self.probability_flow else g

  def sde(self, x, t):
    f, g = self.forward.sde(x, t)
    return self._reverse(f, g, x, t)

  def discretize(self, x, t):
    f, g = self.forward.discretize(x, t)
    return self._reverse(f, g, x, t)


SDES = {'vpsde': VPSDE, 'subvpsde': SubVPSDE, 'vesde': VESDE, 'rectified_flow': RectifiedFlow,
        'edm': EDMSDE}


def get_sde(config) -> SDE:
  """Builds the SDE named by ``config.training.sde`` from the paper's ``config.model`` fields
  (each class's ``from_config``)."""
  name = config.training.sde.lower()
  if name not in SDES:
    raise ConfigError(f'Unknown SDE {config.training.sde!r}; valid: {sorted(SDES)}.')
  return SDES[name].from_config(config.model)
