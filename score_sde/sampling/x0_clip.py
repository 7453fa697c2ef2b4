"""Data-prediction clipping for bounded data: a ``score_fn`` wrapper, so every sampler gets it.

At (x, t) with x = m x0 + s eps, a score s(x, t) implies the data prediction (Tweedie)

    x0_hat = (x + s^2 score) / m,

which for bounded data (images in [lo, hi]) should lie in the data range, but at high noise,
where 1/m is large (m(T) = 0.0067 for the paper's VP), a small error in the score sends it far
out. The wrapper replaces x0_hat by a clipped x0_c and returns the score that predicts it,
score_c = (m x0_c - x) / s^2 (``parameterization.convert``: an exact round trip), so the
predictor-corrector, ODE, DPM-Solver++, DDIM and Heun samplers all sample with the clipped
prediction without a line of their own.

  'static'   x0_c = clip(x0_hat, lo, hi).
  'dynamic'  dynamic thresholding (Saharia et al. 2022, Imagen; DPM-Solver++): per sample, in
             the centred units z = (x0_hat - c) / h (c, h: the range's centre and half-width,
             so the range is [-1, 1]), r = the ``percentile`` quantile of |z| over the sample's
             entries, r' = max(r, 1), z_c = clip(z, -r', r') / r', x0_c = c + h z_c.
             A prediction inside the range (r <= 1) is unchanged; one far outside is pulled in
             and rescaled rather than saturated at the bounds.

Both leave a prediction that is inside the range unchanged. Shapes: x (B, ...), t (B,).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from score_sde import parameterization
from score_sde.errors import ConfigError

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def static_clip(x0: jax.Array, lo: float, hi: float, percentile: float | None = None) -> jax.Array:
  """clip(x0, lo, hi), elementwise (``percentile`` is not read)."""
  del percentile
  return jnp.clip(x0, lo, hi)


def dynamic_threshold(x0: jax.Array, lo: float, hi: float, percentile: float = 0.995) -> jax.Array:
  """Imagen's dynamic thresholding of each example of x0 (B, ...) to [lo, hi] (module docstring)."""
  centre, half = (hi + lo) / 2.0, (hi - lo) / 2.0
  z = (x0 - centre) / half
  r = jnp.quantile(jnp.abs(z).reshape(z.shape[0], -1), percentile, axis=1)
  r = jnp.maximum(r, 1.0).reshape((-1,) + (1,) * (z.ndim - 1))
  return centre + half * jnp.clip(z, -r, r) / r


X0_CLIPS = {'static': static_clip, 'dynamic': dynamic_threshold}


def check(kind: str | None, percentile: float = 0.995) -> None:
  """ConfigError for an unknown ``sampling.x0_clip`` or a percentile outside (0, 1]."""
  if kind is not None and kind not in X0_CLIPS:
    raise ConfigError(f'Unknown sampling.x0_clip {kind!r}; valid: None, '
                      f'{", ".join(repr(k) for k in X0_CLIPS)}.')
  if kind == 'dynamic' and not 0.0 < percentile <= 1.0:
    raise ConfigError('sampling.dynamic_threshold_percentile is a fraction in (0, 1] (0.995: '
                      f'the 99.5th percentile of |x0|), got {percentile}.')


def x0_clipped_score_fn(score_fn: ScoreFn, sde, kind: str, data_range: tuple[float, float],
                        percentile: float = 0.995) -> ScoreFn:
  """``score_fn`` with its data prediction clipped to ``data_range`` = (lo, hi) by ``kind``
  ('static' | 'dynamic'); see the module docstring."""
  check(kind, percentile)
  clip = X0_CLIPS[kind]
  lo, hi = (float(v) for v in data_range)

  def clipped(x, t):
    c = parameterization.coefficients(sde, t)
    x0 = parameterization.convert(score_fn(x, t), x, 'score', 'x0', c)
    return parameterization.convert(clip(x0, lo, hi, percentile), x, 'x0', 'score', c)
  return clipped


def data_range(config) -> tuple[float, float]:
  """The model-space range of the data: (-1, 1) for centred images, else (0, 1). ConfigError for
  data with no bounds (the 2-D toys)."""
  if config.data.image_size is None:
    raise ConfigError(f'sampling.x0_clip={config.sampling.x0_clip!r} needs bounded data, and '
                      f'data.dataset={config.data.dataset!r} (2-D toy data) has no range to clip '
                      'to; set sampling.x0_clip=None.')
  return (-1.0, 1.0) if config.data.centered else (0.0, 1.0)


def from_config(config, sde, score_fn: ScoreFn) -> ScoreFn:
  """``score_fn`` wrapped as ``config.sampling.x0_clip`` asks (unchanged when it is None)."""
  s = config.sampling
  check(s.x0_clip, s.dynamic_threshold_percentile)
  if s.x0_clip is None:
    return score_fn
  return x0_clipped_score_fn(score_fn, sde, s.x0_clip, data_range(config),
                             s.dynamic_threshold_percentile)
