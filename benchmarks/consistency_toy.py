"""Consistency distillation on the 8-mode mixture with the exact score as teacher: how close the
1- and 2-step samples of the toy MLP get to the exact-sample noise floor.

Usage:  .venv/bin/python benchmarks/consistency_toy.py [--sde=ve] [--iters=3000] [--levels=18]
        [--lr=1e-3] [--parameterization=x0] [--num_samples=20000]

The student is ``default_toy``'s MLP (output read as ``--parameterization``), its consistency
function f = c_skip y + (1 - c_skip) D_theta (``score_sde.consistency``); the loss is iCT's
(pseudo-Huber, 1 / dsigma weights, log-normal level weights, stop-gradient target) with one Heun
step of the exact mixture flow as the teacher. Batches of 1024 fresh mixture samples, Adam with
global-norm clipping at 1, EMA 0.999. Every 500 steps: ``mixture_fit`` (z, the largest weight
error, the largest |within-mode std / 0.08 - 1|) of 1-step samples (from sigma(T)) and 2-step
samples (re-noised to the middle level of a 3-point Karras grid), raw and EMA parameters. The
noise floor of as many exact samples: z about 2.4, w_err 0.0045, s_err 0.02 (RESULTS.md).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default_toy
from score_sde import consistency, models, sde_lib
from score_sde.datasets import toy
from score_sde.models import utils as mutils
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()
SDES = {'ve': ('vesde', sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0), 3.0),
        'vp': ('vpsde', sde_lib.VPSDE(), None),
        'edm': ('edm', sde_lib.EDMSDE(sigma_max=10.0), 10.0)}
EPS = 1e-3


def fits(sde, model, params, n):
  score_fn = mutils.get_score_fn(sde, model, params)
  middle = float(consistency.level_times(sde, 3, EPS)[1])
  out = {}
  for k, times in ((1, [sde.T]), (2, [sde.T, middle])):
    sample = jax.jit(lambda rng: consistency.multistep_sample(rng, score_fn, sde, (n, 2), times,
                                                              EPS))
    out[k] = mixture_fit(np.asarray(sample(jax.random.PRNGKey(7))), GMM)
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--sde', default='ve', choices=sorted(SDES))
  parser.add_argument('--iters', type=int, default=3000)
  parser.add_argument('--levels', type=int, default=18)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--parameterization', default='x0')
  parser.add_argument('--num_samples', type=int, default=20000)
  args = parser.parse_args()
  config = default_toy.get_config()
  sde_name, sde, sigma_max = SDES[args.sde]
  config.training.sde = sde_name
  config.model.sigma_min, config.model.sigma_max = 0.01, sigma_max or config.model.sigma_max
  config.model.parameterization = args.parameterization
  model = models.get_model(config)
  params = ema = mutils.init_params(jax.random.PRNGKey(0), model, (1, 2))
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))
  opt_state = optimizer.init(params)
  teacher = GMM.score_fn(sde)

  def loss_fn(params, x, rng):
    score_fn = mutils.get_score_fn(sde, model, params, train=True)
    return jnp.mean(consistency.consistency_losses(rng, score_fn, x, sde, num_levels=args.levels,
                                                   eps=EPS, teacher_score_fn=teacher))

  @jax.jit
  def step(params, opt_state, ema, key):
    data_key, loss_key = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(params, GMM.sample(data_key, 1024), loss_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, optax.incremental_update(params, ema, 1e-3), loss

  print(f'## CD on the mixture, {args.sde}, {args.levels} levels, lr {args.lr}, '
        f'{args.parameterization} network')
  start = time.perf_counter()
  for i in range(args.iters + 1):
    params, opt_state, ema, loss = step(params, opt_state, ema, jax.random.PRNGKey(i + 1))
    if i % 500 == 0:
      cells = []
      for name, p in (('raw', params), ('ema', ema)):
        for k, f in fits(sde, model, p, args.num_samples).items():
          cells.append(f"{name} {k}-step z={f['z']:.1f} w_err={f['weight_err']:.3f} "
                       f"s_err={f['std_err']:.3f}")
      print(f'step {i:5d} loss {float(loss):.4f} | ' + ' | '.join(cells) +
            f' | {time.perf_counter() - start:.0f} s', flush=True)


if __name__ == '__main__':
  main()
