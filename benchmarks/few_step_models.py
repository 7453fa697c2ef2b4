"""Few-step models trained by train.py on the 8-mode mixture, next to score models of the same
size sampled with about 100 NFE: ``mixture_fit`` of 20,000 samples per cell.

Usage:  .venv/bin/python benchmarks/few_step_models.py --run=ct:runs/ct --run=meanflow:runs/mf
        --run=score:runs/score [--num_samples=20000] [--seeds=1,2]

Each ``--run=NAME:WORKDIR`` is loaded with ``score_sde.load`` (EMA parameters). A few-step model
(training.objective 'ct' | 'cd' | 'meanflow') is drawn with ``few_step`` in 1 and 2 steps (2
steps: the run's grid, then the Karras and the logSNR grid explicitly); a
score model with UniPC-3 (bh2, logSNR grid) at 100 steps and Heun (EDM grid) at 50 steps (99
NFE). Each cell shows the larger z over the seeds and that seed's weight and spread errors; the
noise floor of exact samples of this size is z <= 2.72 (95th percentile of 20 sets, RESULTS.md).
"""
from __future__ import annotations

import argparse

import jax
import numpy as np

import score_sde
from score_sde import consistency, datasets
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()
FEW_STEP = [('few_step', {'num_steps': 1}), ('few_step', {'num_steps': 2}),
            ('few_step', {'num_steps': 2, 'time_schedule': 'edm'}),
            ('few_step', {'num_steps': 2, 'time_schedule': 'logsnr'})]
SCORE = [('unipc', {'num_steps': 100, 'order': 3, 'unipc_variant': 'bh2'}),
         ('heun', {'num_steps': 50})]


def cells(run, num_samples, seeds):
  few = run.config.training.get('objective') in consistency.OBJECTIVES
  for method, settings in (FEW_STEP if few else SCORE):
    fits, nfe = [], None
    for seed in seeds:
      out = run.sample(num_samples, method, seed=seed, batch_size=num_samples // 4,
                       show_progress=False, **settings)
      # Run.sample returns 'images' in [0, 1]; the mixture lives in the model's range.
      fits.append(mixture_fit(datasets.get_data_scaler(run.config)(out.images), GMM))
      nfe = out.nfe
    worst = max(fits, key=lambda f: f['z'])
    yield method, settings, nfe, worst


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--run', action='append', required=True, help='NAME:WORKDIR')
  parser.add_argument('--num_samples', type=int, default=20000)
  parser.add_argument('--seeds', default='1,2')
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  print(f'| run | SDE | objective | params | sampler | NFE | z (max of {len(seeds)} seeds) | '
        'w_err | s_err |')
  print('|---|---|---|---|---|---|---|---|---|')
  for spec in args.run:
    name, workdir = spec.split(':', 1)
    run = score_sde.load(workdir)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(run.params))
    for method, settings, nfe, fit in cells(run, args.num_samples, seeds):
      shown = ', '.join(f'{k}={v}' for k, v in settings.items())
      print(f"| {name} (step {run.step}) | {run.config.training.sde} | "
            f"{run.config.training.objective or 'score'} | {n_params:,} | {method} {shown} | "
            f"{nfe} | {fit['z']:.2f} | {fit['weight_err']:.4f} | {fit['std_err']:.3f} |",
            flush=True)


if __name__ == '__main__':
  main()
