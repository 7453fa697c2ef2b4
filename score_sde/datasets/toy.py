"""Low-dimensional distributions generated in code, for demos and closed-form tests.

Every sampler is a pure function ``sample(rng, n) -> (n, 2)`` (float32). The shapes (spiral,
swiss roll, checkerboard, two moons) are drawn in [-1, 1]^2 and served by ``TOY_DISTRIBUTIONS``
scaled by ``SHAPE_SCALE`` = 3: for the VP/sub-VP SDEs (unit-variance prior) structure must be
large against the noise at small t to be learnt quickly, so data of roughly unit-or-larger
spread trains far better than data squeezed into [-1, 1]. ``GaussianMixture`` also
gives the exact score and log-density of its marginal under any linear SDE of ``sde_lib``:
if x(0) ~ sum_k w_k N(mu_k, diag(sig_k^2)) and p_0t(x(t)|x(0)) = N(m(t) x(0), s(t)^2 I), then

    p_t = sum_k w_k N(m(t) mu_k, diag(m(t)^2 sig_k^2 + s(t)^2)),

so ``score(x, t)`` and ``log_prob(x, t)`` are exact at every t.

Labelled variants (``LABELLED_TOY_DISTRIBUTIONS``, ``sample(rng, n, num_classes) -> (x, y)``) give
the class-conditional data of guidance: the spiral's arm (2 classes) and the mixture's component
k with class k mod num_classes. Class y of a mixture is the sub-mixture of its components, so
``class_score(x, t, y)`` = grad_x log p_t(x | y) is exact too.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError


def spiral(rng, n: int, turns: float = 1.75, noise: float = 0.05) -> jax.Array:
  """A two-armed Archimedean spiral in roughly [-1, 1]^2, with Gaussian jitter of std ``noise``."""
  return spiral_with_arms(rng, n, turns, noise)[0]


def spiral_with_arms(rng, n: int, turns: float = 1.75, noise: float = 0.05):
  """``spiral``'s points (n, 2) and their arm (n,) int32: 0 or 1."""
  k1, k2, k3 = jax.random.split(rng, 3)
  u = jnp.sqrt(jax.random.uniform(k1, (n,)))         # sqrt: even density along the arm
  theta = 2 * math.pi * turns * u
  first = jax.random.bernoulli(k2, 0.5, (n,))
  arm = jnp.where(first, 1.0, -1.0)
  xy = arm[:, None] * u[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
  return xy + noise * jax.random.normal(k3, (n, 2)), jnp.where(first, 0, 1).astype(jnp.int32)


def swiss_roll(rng, n: int, noise: float = 0.05) -> jax.Array:
  k1, k2 = jax.random.split(rng)
  t = 1.5 * math.pi * (1 + 2 * jax.random.uniform(k1, (n,)))
  xy = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], -1) / (4.5 * math.pi)
  return xy + noise * jax.random.normal(k2, (n, 2))


def checkerboard(rng, n: int, cells: int = 4) -> jax.Array:
  """Uniform on the black cells of a cells x cells board covering [-1, 1]^2."""
  k1, k2, k3 = jax.random.split(rng, 3)
  i = jax.random.randint(k1, (n,), 0, cells)
  j = 2 * jax.random.randint(k2, (n,), 0, cells // 2) + (i % 2)
  cell = jnp.stack([i, j], -1).astype(jnp.float32)
  return (cell + jax.random.uniform(k3, (n, 2))) * (2.0 / cells) - 1.0


def two_moons(rng, n: int, noise: float = 0.05) -> jax.Array:
  k1, k2, k3 = jax.random.split(rng, 3)
  a = math.pi * jax.random.uniform(k1, (n,))
  upper = jax.random.bernoulli(k2, 0.5, (n,))
  x = jnp.where(upper, jnp.cos(a), 1 - jnp.cos(a))
  y = jnp.where(upper, jnp.sin(a), 0.5 - jnp.sin(a))
  xy = (jnp.stack([x, y], -1) - jnp.array([0.5, 0.25])) / 1.2
  return xy + noise * jax.random.normal(k3, (n, 2))


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """sum_k w_k N(means[k], diag(stds[k]^2)); means, stds: (K, D), weights: (K,)."""
  means: np.ndarray
  stds: np.ndarray
  weights: np.ndarray

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  def sample(self, rng, n: int) -> jax.Array:
    return self.sample_with_components(rng, n)[0]

  def sample_with_components(self, rng, n: int):
    """Samples (n, D) and the component (n,) int32 each was drawn from."""
    k1, k2 = jax.random.split(rng)
    k = jax.random.choice(k1, len(self.weights), (n,), p=jnp.asarray(self.weights))
    z = jax.random.normal(k2, (n, self.dim))
    return jnp.asarray(self.means)[k] + jnp.asarray(self.stds)[k] * z, k.astype(jnp.int32)

  def _marginal(self, t, sde):
    """Per-example component means (B, K, D) and variances (B, K, D) of p_t."""
    means = jnp.asarray(self.means, jnp.float32)
    var0 = jnp.asarray(self.stds, jnp.float32)**2
    if sde is None:
      return means[None], var0[None]
    t = jnp.asarray(t, jnp.float32)
    ones = jnp.ones((t.shape[0], 1))
    mean_coeff, std = sde.marginal_prob(ones, t)                  # (B, 1), (B,)
    m = mean_coeff[:, :, None]                                     # (B, 1, 1)
    return m * means[None], m**2 * var0[None] + (std**2)[:, None, None]

  def _component_logp(self, x, t, sde):
    """log w_k + log N(x; mean_k(t), var_k(t)) for each k: (B, K)."""
    mu, var = self._marginal(t, sde)
    diff = x[:, None, :] - mu
    logn = -0.5 * jnp.sum(diff**2 / var + jnp.log(2 * math.pi * var), -1)
    return jnp.log(jnp.asarray(self.weights, jnp.float32))[None] + logn

  def log_prob(self, x, t=None, sde=None) -> jax.Array:
    """log p_t(x) for x: (B, D), t: (B,) -> (B,). With ``sde=None``, the data density p_0."""
    return jax.nn.logsumexp(self._component_logp(x, t, sde), axis=-1)

  def score(self, x, t=None, sde=None) -> jax.Array:
    """grad_x log p_t(x) = sum_k r_k(x) (mean_k(t) - x) / var_k(t), r_k the responsibilities."""
    mu, var = self._marginal(t, sde)
    r = jax.nn.softmax(self._component_logp(x, t, sde), axis=-1)
    return jnp.sum(r[..., None] * (mu - x[:, None, :]) / var, axis=1)

  def score_fn(self, sde) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact score of p_t as a ``score_fn(x, t)``, the form samplers and likelihoods take."""
    return lambda x, t: self.score(x, t, sde)

  # Classes: component k belongs to class k mod num_classes; label num_classes is "no label".

  def _class_logp(self, x, t, sde, labels, num_classes):
    """Component terms with those outside each example's class at -inf: (B, K)."""
    logp = self._component_logp(x, t, sde)
    k = jnp.arange(len(self.weights))
    inside = (k[None] % num_classes == labels[:, None]) | (labels[:, None] == num_classes)
    return jnp.where(inside, logp, -jnp.inf)

  def class_score(self, x, t, labels, num_classes: int, sde=None) -> jax.Array:
    """grad_x log p_t(x | y) for (B,) labels y (y = num_classes: grad_x log p_t(x)), (B, D)."""
    mu, var = self._marginal(t, sde)
    r = jax.nn.softmax(self._class_logp(x, t, sde, labels, num_classes), axis=-1)
    return jnp.sum(r[..., None] * (mu - x[:, None, :]) / var, axis=1)

  def class_logits(self, x, t, num_classes: int, sde=None) -> jax.Array:
    """log p_t(x, y) for every class y, (B, num_classes): logits of the exact classifier
    p_t(y | x) = softmax_y."""
    logp = self._component_logp(x, t, sde)
    k = jnp.arange(len(self.weights))
    member = (k[None] % num_classes) == jnp.arange(num_classes)[:, None]     # (C, K)
    return jax.nn.logsumexp(jnp.where(member[None], logp[:, None], -jnp.inf), axis=-1)

  def class_mixture(self, label: int, num_classes: int) -> 'GaussianMixture':
    """p(x | y = label): the components of the class, weights renormalised."""
    keep = np.arange(len(self.weights)) % num_classes == label
    w = np.asarray(self.weights)[keep]
    return GaussianMixture(np.asarray(self.means)[keep], np.asarray(self.stds)[keep], w / w.sum())


def gaussian_mixture(num_modes: int = 8, radius: float = 0.8, std: float = 0.08,
                     dim: int = 2) -> GaussianMixture:
  """``num_modes`` equal-weight isotropic modes evenly on a circle of ``radius`` (first two axes)."""
  angles = 2 * math.pi * np.arange(num_modes) / num_modes
  means = np.zeros((num_modes, dim), np.float32)
  means[:, 0], means[:, 1] = radius * np.cos(angles), radius * np.sin(angles)
  stds = np.full((num_modes, dim), std, np.float32)
  return GaussianMixture(means, stds, np.full((num_modes,), 1.0 / num_modes, np.float32))


SHAPE_SCALE = 3.0


def _scaled(sample: Callable, scale: float = SHAPE_SCALE) -> Callable:
  return lambda rng, n: scale * sample(rng, n)


TOY_DISTRIBUTIONS = {
    'spiral': _scaled(spiral),
    'swiss_roll': _scaled(swiss_roll),
    'checkerboard': _scaled(checkerboard),
    'two_moons': _scaled(two_moons),
    'gaussian_mixture': lambda rng, n: gaussian_mixture().sample(rng, n),
}


def get_toy_sampler(name: str) -> Callable[[jax.Array, int], jax.Array]:
  if name not in TOY_DISTRIBUTIONS:
    raise ConfigError(f'Unknown toy distribution {name!r}; valid: {sorted(TOY_DISTRIBUTIONS)}.')
  return TOY_DISTRIBUTIONS[name]


def _labelled_spiral(rng, n, num_classes):
  x, arm = spiral_with_arms(rng, n)
  return SHAPE_SCALE * x, arm


def _labelled_mixture(rng, n, num_classes):
  x, k = gaussian_mixture().sample_with_components(rng, n)
  return x, k % num_classes


# name -> (sample(rng, n, num_classes) -> (x (n, 2), labels (n,) int32), valid num_classes).
LABELLED_TOY_DISTRIBUTIONS = {
    'spiral': (_labelled_spiral, (2,)),
    'gaussian_mixture': (_labelled_mixture, tuple(range(1, 9))),
}


def get_labelled_toy_sampler(name: str, num_classes: int) -> Callable:
  """``sample(rng, n) -> (x, labels)``: the same points as ``get_toy_sampler(name)``, labelled."""
  if name not in LABELLED_TOY_DISTRIBUTIONS:
    raise ConfigError(f'Toy distribution {name!r} has no labels; labelled ones: '
                      f'{sorted(LABELLED_TOY_DISTRIBUTIONS)}.')
  sample, valid = LABELLED_TOY_DISTRIBUTIONS[name]
  if num_classes not in valid:
    raise ConfigError(f'data.num_classes={num_classes} for labelled {name!r}; '
                      f'valid: {list(valid)}.')
  return lambda rng, n: sample(rng, n, num_classes)
