"""Consistency distillation on the 8-mode mixture with the exact score as teacher: how close the
1- and 2-step samples of the toy MLP get to the exact-sample noise floor.

Usage:  .venv/bin/python benchmarks/consistency_toy.py [--sde=ve] [--iters=6000] [--ratio=4]
        [--substeps=8] [--levels=18] [--lr=1e-3] [--decay=cosine] [--precond=edm] [--metric=l2]
        [--mids=0.1,0.17,0.3]

The student is ``default_toy``'s MLP, EDM-preconditioned (``--precond=edm``; 'x0' reads the bare
network's output as x(0), the earlier choice), its consistency function the DDIM jump
f = D + (sigma_min / sigma)(y - D) (``score_sde.consistency``); the loss is iCT's (1 / dsigma
weights, log-normal level weights, stop-gradient target, ``--metric``: 'pseudo_huber' or 'l2')
with ``--substeps`` Heun steps of the exact mixture flow as the teacher between the levels sigma
and sigma / ``--ratio`` (``--ratio=0``: adjacent levels of a ``--levels``-point Karras grid).
Batches of 1024 fresh mixture samples, the toy optimizer (Adam, global-norm clipping at 1, 100 warm-up steps) at ``--lr`` with
``--decay`` ('cosine' to 0 at ``--iters``, or 'none'), EMA 0.999. Every ``--every`` steps:
``mixture_fit`` (z, the largest weight error, the largest |within-mode std / 0.08 - 1|) of 1-step
samples (from sigma(T)) and 2-step samples (re-noised to each sigma of ``--mids``), raw and EMA
parameters, the larger z of seeds 1 and 2. The noise floor of as many exact samples: z <= 2.72,
w_err 0.0045, s_err 0.02 (RESULTS.md).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import default_toy
from score_sde import consistency, models, sde_lib, train_state
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit
from score_sde.models import utils as mutils
from score_sde.sampling import schedules

GMM = toy.gaussian_mixture()
SDES = {'ve': ('vesde', lambda: sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0), 3.0),
        'vp': ('vpsde', sde_lib.VPSDE, None),
        'edm': ('edm', lambda: sde_lib.EDMSDE(sigma_max=10.0), 10.0)}
EPS = 1e-3


def fit_cells(sde, model, params, n, mids, seeds=(1, 2)):
  """{label: (z, w_err, s_err)} of 1-step and 2-step samples, the worse seed of ``seeds``."""
  plans = {'1-step': [sde.T]}
  for sigma in mids:
    plans[f'2-step@{sigma:g}'] = [sde.T, float(schedules.time_of_sigma(sde, np.array([sigma]))[0])]
  out = {}
  for label, times in plans.items():
    draw = jax.jit(lambda params, rng, times=times: consistency.multistep_sample(
        rng, mutils.get_score_fn(sde, model, params), sde, (n, 2), times, EPS))
    fits = [mixture_fit(np.asarray(draw(params, jax.random.PRNGKey(seed))), GMM)
            for seed in seeds]
    worst = max(fits, key=lambda f: f['z'])
    out[label] = (worst['z'], worst['weight_err'], worst['std_err'])
  return out


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--sde', default='ve', choices=sorted(SDES))
  parser.add_argument('--iters', type=int, default=6000)
  parser.add_argument('--levels', type=int, default=18)
  parser.add_argument('--ratio', type=float, default=4.0)
  parser.add_argument('--substeps', type=int, default=8)
  parser.add_argument('--lr', type=float, default=1e-3)
  parser.add_argument('--decay', default='cosine', choices=['cosine', 'none'])
  parser.add_argument('--precond', default='edm', choices=['edm', 'x0'])
  parser.add_argument('--metric', default='l2', choices=sorted(consistency.METRICS))
  parser.add_argument('--mids', default='0.1,0.17,0.3')
  parser.add_argument('--every', type=int, default=2000)
  parser.add_argument('--num_samples', type=int, default=20000)
  args = parser.parse_args()
  config = default_toy.get_config()
  sde_name, make_sde, sigma_max = SDES[args.sde]
  sde = make_sde()
  config.training.sde = sde_name
  config.model.sigma_min, config.model.sigma_max = 0.01, sigma_max or config.model.sigma_max
  if args.precond == 'edm':
    config.model.precond = 'edm'
  else:
    config.model.parameterization = 'x0'
  config.optim.lr, config.optim.decay = args.lr, args.decay
  model = models.get_model(config)
  params = ema = mutils.init_params(jax.random.PRNGKey(0), model, (1, 2))
  optimizer = train_state.get_optimizer(config.optim, args.iters)
  opt_state = optimizer.init(params)
  teacher = GMM.score_fn(sde)
  mids = [float(v) for v in args.mids.split(',')]

  def loss_fn(params, x, rng):
    score_fn = mutils.get_score_fn(sde, model, params, train=True)
    return jnp.mean(consistency.consistency_losses(rng, score_fn, x, sde, num_levels=args.levels,
                                                   eps=EPS, teacher_score_fn=teacher,
                                                   metric=args.metric,
                                                   level_ratio=args.ratio or None,
                                                   teacher_substeps=args.substeps))

  @jax.jit
  def step(params, opt_state, ema, key):
    data_key, loss_key = jax.random.split(key)
    loss, grads = jax.value_and_grad(loss_fn)(params, GMM.sample(data_key, 1024), loss_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, opt_state, train_state.ema_update(params, ema, config.model.ema_rate), loss

  levels = (f'levels sigma and sigma / {args.ratio:g}' if args.ratio else
            f'{args.levels} grid levels')
  print(f'## CD on the mixture, {args.sde}, {levels}, {args.substeps} teacher Heun steps, '
        f'lr {args.lr} ({args.decay}), '
        f'{args.precond} network, {args.metric} metric, {args.iters} steps')
  elapsed = 0.0
  for i in range(1, args.iters + 1):
    start = time.perf_counter()
    params, opt_state, ema, loss = step(params, opt_state, ema, jax.random.PRNGKey(i))
    if i % args.every == 0 or i == args.iters:
      loss = float(loss)   # waits for the step
    elapsed += time.perf_counter() - start
    if i % args.every == 0 or i == args.iters:
      cells = []
      for name, p in (('raw', params), ('ema', ema)):
        for label, (z, w, s) in fit_cells(sde, model, p, args.num_samples, mids).items():
          cells.append(f'{name} {label} z={z:.2f} w_err={w:.4f} s_err={s:.3f}')
      print(f'step {i:5d} loss {loss:.5f} training {elapsed:.0f} s | ' + ' | '.join(cells),
            flush=True)


if __name__ == '__main__':
  main()
