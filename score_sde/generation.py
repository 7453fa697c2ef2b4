"""Drawing samples from a trained model on all devices: the one place samplers meet models."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import parallel, sampling, sde_lib
from score_sde.models import utils as mutils


def sample_shape(config) -> tuple[int, ...]:
  """Per-example data shape: (H, W, C) for images, (D,) for low-dimensional data."""
  if config.data.image_size is None:
    return (config.data.dim,)
  return (config.data.image_size, config.data.image_size, config.data.num_channels)


def get_sample_fn(config, sde, model, per_device_batch: int, devices: Sequence | None = None):
  """``sample_fn(replicated_params, rng) -> (samples, nfe)``, samples (num_devices, b, ...).

  The sampler is built (and its config validated) here, once; it is compiled on first call.
  """
  sampler = sampling.get_sampler(config, sde, (per_device_batch,) + sample_shape(config))

  def sample(params, rng):
    score_fn = mutils.get_score_fn(sde, model, params, train=False,
                                   continuous=config.training.continuous)
    return sampler(rng, score_fn)
  return parallel.pmap_sampling(sample, devices)


def draw_samples(sample_fn, replicated_params: Any, rng, num_samples: int,
                 per_call: int | None = None) -> tuple[np.ndarray, int]:
  """Calls ``sample_fn`` until ``num_samples`` are drawn, over all hosts together.

  Every call draws a different batch on every device of every host (keys folded with the call
  index and the global device index); on several hosts each call's samples are gathered in
  process order, so every host returns the same (num_samples, ...) array. Returns it and the NFE
  of one call. ``per_call`` is unused (the count is read off each call's output).
  """
  del per_call
  out, nfe, total, r = [], 0, 0, 0
  while total < num_samples:
    samples, nfe = sample_fn(replicated_params, jax.random.fold_in(rng, r))
    out.append(parallel.gather_hosts(parallel.unshard(parallel.to_host(samples))))
    total, r = total + len(out[-1]), r + 1
  return np.concatenate(out)[:num_samples], int(np.asarray(nfe).reshape(-1)[0])


def reverse_sde_paths(rng, score_fn, sde, x_T, num_steps: int = 200, eps: float = 1e-3,
                      num_saved: int = 50, probability_flow: bool = True):
  """Euler(–Maruyama) paths of the probability-flow ODE (or reverse SDE) from x_T (K, D).

  For pictures: returns (paths (num_saved, K, D), times (num_saved,)) from t=T down to eps.
  """
  rsde = sde.reverse(score_fn, probability_flow=probability_flow)
  ts = jnp.linspace(sde.T, eps, num_steps)
  dt = -(sde.T - eps) / (num_steps - 1)

  def step(x, inputs):
    t, key = inputs
    drift, g = rsde.sde(x, jnp.full((x.shape[0],), t))
    x = x + drift * dt + sde_lib.batch_mul(g * jnp.sqrt(-dt), jax.random.normal(key, x.shape))
    return x, x

  _, xs = jax.lax.scan(step, x_T, (ts[:-1], jax.random.split(rng, num_steps - 1)))
  xs = jnp.concatenate([x_T[None], xs])
  keep = np.linspace(0, num_steps - 1, num_saved).round().astype(int)
  return np.asarray(xs)[keep], np.asarray(ts)[keep]
