"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself").

A model's score s is guided away from the score s_g of a weaker *guide* model of the same SDE
and data (smaller and trained for less time):

    score(x, t) = s(x, t) + w (s(x, t) - s_g(x, t)),

so w = 0 is the model alone. The paper writes D_w = w' D + (1 - w') D_g for denoisers; since
D = (x + s(t)^2 score) / m(t) is affine in the score, the two agree with w' = 1 + w (the paper's
best w' of 1.4-2.2 is w = 0.4-1.2 here). Unlike classifier-free guidance it needs no condition:
it sharpens an *unconditional* model where the two models disagree, i.e. where the strong model
has learned more than the weak one, rather than pulling towards a class.

With an interval, w applies only while the noise level sigma(t) = s(t) / m(t) lies in
[sigma_min, sigma_max] (as the guidance interval of Kynkaanniemi et al. 2024 for classifier-free
guidance); on the digits guiding only below sigma = 2 keeps the sharper digits and loses less
diversity (benchmarks/RESULTS.md, "Autoguidance on the digits").

Config: ``sampling.autoguidance_workdir`` (a trained score model of the same SDE and data: its
latest checkpoint's EMA parameters; it may be a different, smaller network),
``sampling.autoguidance_scale`` (w) and ``sampling.autoguidance_sigma_min`` / ``_sigma_max``
(the interval; default all noise levels). Every sampler gets it through ``score_fn`` (``generation``
wraps the score before the sampler sees it); each score evaluation costs two network passes.
Shapes: x (B, ...), t (B,).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from score_sde import consistency, runs, sde_lib
from score_sde.errors import ConfigError
from score_sde.models import utils as mutils
from score_sde.sampling import guidance

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
KEY = 'sampling.autoguidance_workdir'


def autoguided_score_fn(score_fn: ScoreFn, guide_score_fn: ScoreFn, sde, scale: float,
                        sigma_min: float = 0.0, sigma_max: float = math.inf) -> ScoreFn:
  """score + w (score - guide's score), w = ``scale`` while sigma(t) = s(t) / m(t) lies in
  [sigma_min, sigma_max] and 0 outside, where the guide is not evaluated (module docstring)."""
  def guided(x, t):
    s = score_fn(x, t)
    w = jnp.where(guidance.in_guidance_interval(sde, t, sigma_min, sigma_max), scale, 0.0)
    return s + sde_lib.batch_mul(w, s - guide_score_fn(x, t))

  if sigma_min <= 0 and sigma_max == math.inf:
    return guided

  def interval_score_fn(x, t):
    # Samplers step the whole batch at one t: outside the interval skip the guide's pass.
    inside = jnp.any(guidance.in_guidance_interval(sde, t, sigma_min, sigma_max))
    return jax.lax.cond(inside, guided, score_fn, x, t)
  return interval_score_fn


def enabled(config) -> bool:
  return config.sampling.get('autoguidance_workdir') is not None


def check(config):
  """The guide's stored config, checked against ``config`` (None when autoguidance is off);
  raises one line for a scale without a guide, a few-step model on either side, or a guide of
  another SDE, data shape or range."""
  s = config.sampling
  scale = float(s.get('autoguidance_scale', 0.0))
  if not enabled(config):
    if scale != 0.0:
      raise ConfigError(f'sampling.autoguidance_scale={scale:g} needs a guide: set {KEY} to a '
                        'smaller or shorter-trained score model of the same SDE and data.')
    return None
  lo, hi = float(s.autoguidance_sigma_min), float(s.autoguidance_sigma_max)
  if not 0.0 <= lo < hi:
    raise ConfigError(f'sampling.autoguidance_sigma_min={lo:g}, _sigma_max={hi:g}: the interval '
                      'must satisfy 0 <= sigma_min < sigma_max.')
  if config.training.get('objective') in consistency.OBJECTIVES:
    raise ConfigError(f"Autoguidance ({KEY}) guides a score model; this is a few-step model "
                      f"(training.objective={config.training.objective!r}).")
  return runs.check_score_model(s.autoguidance_workdir, config, KEY, 'guide')


@dataclasses.dataclass(frozen=True)
class Guide:
  """The guide's network, EMA parameters and continuous-time flag (``load``)."""
  model: Any
  params: Any
  continuous: bool
  step: int

  def score_fn(self, sde: sde_lib.SDE, params) -> ScoreFn:
    return mutils.get_score_fn(sde, self.model, params, train=False, continuous=self.continuous)


def load(config) -> Guide | None:
  """The guide of ``config`` (``check``ed first), or None when autoguidance is off."""
  guide_config = check(config)
  if guide_config is None:
    return None
  model, params, step = runs.restore(config.sampling.autoguidance_workdir, guide_config)
  return Guide(model, params, bool(guide_config.training.continuous), step)
