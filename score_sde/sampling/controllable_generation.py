"""Inpainting and colorization with the paper's predictor-corrector samplers (Song et al. 2021,
App. I.2), for the VP, sub-VP and VE SDEs, by wrapping the PC step (``pc.get_pc_sampler``'s
``wrap_step``): the one sampler loop, nothing copied.

Observed coordinates (mask = 1) of the data y are known. After every PC update from t towards
t' = max(t - T / N, 0), the observed part of x is replaced by a fresh draw of
p_0t'(y(t') | y) = N(m(t') y, s(t')^2 I) and that of x_mean by m(t') y; the unknown part follows
the score of the joint p_t. The returned sample is the final noise-free x_mean (the paper's
``denoise``), now over the filled region too, with its observed part set to y itself.
Differences from the paper's code, which are its known defects: its last denoised output kept
the *noisy* x in the filled region; its known region was noised to t instead of t'; and sub-VP
crashed in the Langevin corrector (no ``alphas``; ``sde_lib.SubVPSDE`` has them).

This replacement method is approximate: it uses grad_u log p_t(u, y(t)) where the exact
conditional needs grad_u log p_t(u | y) = grad_u log p_t(u, y(t)) + grad_u log p(y | u, y(t)),
and drops the second term. It is exact when the unknown part is independent of the observed
one and close when the observed part says little about the unknown; strongly correlated parts
come out biased (measured in benchmarks/RESULTS.md, "Guidance and inpainting").

Colorization is inpainting in a rotated colour basis: each pixel's RGB vector is mapped by the
orthonormal ``COLOR_BASIS`` to (grey, two chroma axes); the grey axis (R + G + B) / sqrt(3) is
observed. The SDEs here are isotropic, so noising commutes with the rotation.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.errors import ConfigError, DataError
from score_sde.sampling import pc

# Columns: (1, 1, 1) / sqrt(3) (grey), then two orthonormal chroma directions.
COLOR_BASIS = np.array([[1 / np.sqrt(3), -np.sqrt(2 / 3), 0.0],
                        [1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)],
                        [1 / np.sqrt(3), 1 / np.sqrt(6), -1 / np.sqrt(2)]], np.float32)


def _identity(x):
  return x


def _to_color_basis(x):
  return jnp.einsum('...i,ij->...j', x, COLOR_BASIS)


def _from_color_basis(x):
  return jnp.einsum('...j,ij->...i', x, COLOR_BASIS)


def _replace_observed(step, sde, y, mask, dt, to_basis, from_basis):
  """The PC step followed by the replacement of the observed coordinates (module docstring).
  y, mask: in the basis given by ``to_basis``; mask broadcasts to x."""
  def wrapped(rng, x, t, score_fn):
    step_key, noise_key = jax.random.split(rng)
    x, x_mean = step(step_key, x, t, score_fn)
    t_next = jnp.maximum(t - dt, 0.0)
    y_mean, std = sde.marginal_prob(jnp.broadcast_to(y, x.shape), t_next)
    y_t = y_mean + std.reshape((-1,) + (1,) * (x.ndim - 1)) * jax.random.normal(noise_key, x.shape)
    x = from_basis(jnp.where(mask, y_t, to_basis(x)))
    x_mean = from_basis(jnp.where(mask, y_mean, to_basis(x_mean)))
    return x, x_mean
  return wrapped


def _check_shapes(shape, image, mask):
  if tuple(image.shape) != tuple(shape):
    raise DataError(f'The observed image batch has shape {tuple(image.shape)}; this sampler draws '
                    f'{tuple(shape)} (batch, then the model\'s data shape).')
  try:
    if np.broadcast_shapes(tuple(mask.shape), tuple(shape)) != tuple(shape):
      raise ValueError
  except ValueError:
    raise DataError(f'Mask of shape {tuple(mask.shape)} does not fit images of shape '
                    f'{tuple(shape)}; it must broadcast to it, e.g. {tuple(shape[1:-1]) + (1,)} '
                    f'or {tuple(shape)}.') from None


def _pc_observed_sampler(sde, shape, to_basis, from_basis, *, predictor='euler_maruyama',
                         corrector='none', snr=0.16, n_steps_each=1, noise_removal=True,
                         eps=1e-3, num_steps=None, probability_flow=False):
  """sample(rng, score_fn, y, mask) -> (x, nfe): the PC sampler with y's masked part observed."""
  num_steps = num_steps or sde.N
  dt = sde.T / num_steps      # the predictors' step (predictors.py)

  def sample(rng, score_fn, y, mask):
    mask = jnp.asarray(mask) > 0.5
    y = jnp.asarray(y, jnp.float32)
    wrap = functools.partial(_replace_observed, sde=sde, y=y, mask=mask, dt=dt,
                             to_basis=to_basis, from_basis=from_basis)
    sampler = pc.get_pc_sampler(sde, shape, predictor=predictor, corrector=corrector, snr=snr,
                                n_steps_each=n_steps_each, noise_removal=noise_removal, eps=eps,
                                num_steps=num_steps, probability_flow=probability_flow,
                                wrap_step=wrap)
    x, nfe = sampler(rng, score_fn)
    return from_basis(jnp.where(mask, y, to_basis(x))), nfe
  return sample


def get_inpainter(sde, shape, **pc_options) -> Callable:
  """``inpaint(rng, score_fn, image, mask) -> (samples, nfe)``, all of ``shape`` (B, ...).

  image: (B, ...) observations in the model's data range (unobserved values are ignored);
  mask: 1 where observed, broadcastable to ``shape`` (e.g. (B, H, W, 1)). The samples equal
  ``image`` where mask = 1. ``pc_options``: those of ``pc.get_pc_sampler``. Traceable.
  """
  sample = _pc_observed_sampler(sde, shape, _identity, _identity, **pc_options)

  def inpaint(rng, score_fn, image, mask):
    _check_shapes(shape, image, mask)
    return sample(rng, score_fn, image, mask)
  return inpaint


def get_colorizer(sde, shape, **pc_options) -> Callable:
  """``colorize(rng, score_fn, grey) -> (samples, nfe)``: RGB images of ``shape`` (B, H, W, 3)
  whose per-pixel channel mean equals ``grey`` (B, H, W, 1) (a (B, H, W, 3) input is averaged
  over channels first)."""
  if len(shape) != 4 or shape[-1] != 3:
    raise ConfigError(f'Colorization needs an RGB image model (data shape (H, W, 3)); this one '
                      f'draws {tuple(shape[1:])}.')
  sample = _pc_observed_sampler(sde, shape, _to_color_basis, _from_color_basis, **pc_options)
  mask = np.array([1.0, 0.0, 0.0], np.float32)

  def colorize(rng, score_fn, grey):
    if grey.ndim != 4 or tuple(grey.shape[:3]) != tuple(shape[:3]) or grey.shape[-1] not in (1, 3):
      raise DataError(f'Grey images must have shape {tuple(shape[:3]) + (1,)} (or 3 channels), '
                      f'got {tuple(grey.shape)}.')
    grey = jnp.mean(jnp.asarray(grey, jnp.float32), axis=-1, keepdims=True)
    y = jnp.concatenate([np.sqrt(3.0) * grey, jnp.zeros_like(grey), jnp.zeros_like(grey)], -1)
    return sample(rng, score_fn, y, mask)
  return colorize


def pc_options(config) -> dict:
  """The PC sampler settings of ``config.sampling``; ConfigError unless its method is 'pc'."""
  s = config.sampling
  if s.method != 'pc':
    raise ConfigError(f'Inpainting and colorization use the paper\'s PC samplers: set '
                      f'sampling.method=pc (got {s.method!r}).')
  return dict(predictor=s.predictor, corrector=s.corrector, snr=s.snr,
              n_steps_each=s.n_steps_each, noise_removal=s.noise_removal, eps=s.eps,
              num_steps=s.num_steps, probability_flow=s.probability_flow)
