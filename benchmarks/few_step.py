"""The NFE frontier on the 8-mode mixture: each solver's fewest NFE to the exact-sample noise floor,
on the default grids and on grids optimised for it (``score_sde.sampling.grid_optimisation``).

Usage:  .venv/bin/python benchmarks/few_step.py [--num_samples=20000] [--sde=vp,ve,rectified_flow,edm]
        [--steps=4,5,6,7,8,10] [--baseline_steps=12,15,20] [--iterations=200]
        [--grid_dir=runs/few_step_grids]

For each SDE the noise floor is measured first: ``mixture_fit``'s z (the largest per-mode weight
or within-mode-std error in units of its exact-sample standard deviation) of 20 independent sets
of ``num_samples`` exact samples; a sampler is "at the floor" when its z, for each of two
sampling seeds, is at most the 95th percentile of those 20. Grids are optimised once per (SDE,
solver, steps) on 2048 prior draws (seed 0; the evaluation uses seeds 1 and 2) and stored as
JSON in ``grid_dir`` (reused when present); DPM-Solver++ and Heun run on UniPC-3's optimised grid
of the same number of points (a grid file is usable by every fixed-grid sampler).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from configs import default_toy
from score_sde import sampling, sde_lib
from score_sde.datasets import toy
from score_sde.sampling import grid_optimisation
from score_sde.evaluation.mixture_fit import mixture_fit

GMM = toy.gaussian_mixture()   # 8 modes, radius 0.8, std 0.08
SDES = {
    'vp': sde_lib.VPSDE(),
    've': sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0),
    'rectified_flow': sde_lib.RectifiedFlow(),
    'edm': sde_lib.EDMSDE(sigma_max=10.0),
}
SEEDS = (1, 2)
OPT_DRAWS = 2048


def solvers():
  """(label, sampling fields, grids to try, the UniPC (order, variant) whose optimised grid it
  steps on, grid points as a function of num_steps, NFE as a function of num_steps)."""
  unipc = lambda order, variant: dict(method='unipc', order=order, unipc_variant=variant)
  steps_plus_one, same = (lambda n: n + 1), (lambda n: n)
  return [
      ('unipc-3 bh2', unipc(3, 'bh2'), ('logsnr', 'edm', 'optimised'), (3, 'bh2'),
       steps_plus_one, same),
      ('unipc-2 bh1', unipc(2, 'bh1'), ('optimised',), (2, 'bh1'), steps_plus_one, same),
      ('dpm_solver++ 3M', dict(method='dpm_solver', order=3), ('logsnr', 'optimised'),
       (3, 'bh2'), steps_plus_one, same),
      ('heun', dict(method='heun'), ('edm', 'optimised'), (3, 'bh2'), same,
       lambda n: 2 * n - 1),
  ]


def build(sde, n, fields):
  config = default_toy.get_config()
  for key, value in fields.items():
    setattr(config.sampling, key, value)
  return sampling.get_sampler(config, sde, (n, 2))


def worst_z(sde, n, fields):
  """max over SEEDS of mixture_fit's z, and the NFE."""
  score_fn = GMM.score_fn(sde)
  sampler = build(sde, n, fields)
  zs, nfe = [], 0
  for seed in SEEDS:
    samples, nfe = sampler(jax.random.PRNGKey(seed), score_fn)
    zs.append(mixture_fit(np.asarray(samples), GMM)['z'])
  return max(zs), int(nfe)


def grid_file(grid_dir, sde_name, sde, order, variant, num_steps, iterations):
  """Path of the UniPC-(order, variant) grid of num_steps steps, optimised here if not stored."""
  path = os.path.join(grid_dir, f'{sde_name}_unipc{order}{variant}_{num_steps}steps.json')
  if not os.path.exists(path):
    start = time.perf_counter()
    times, record = grid_optimisation.optimise_grid(
        sde, GMM.score_fn(sde), (OPT_DRAWS, 2), num_steps, order=order, variant=variant,
        iterations=iterations)
    record['seconds'] = round(time.perf_counter() - start, 1)
    grid_optimisation.save_grid(path, times, sde, record)
  return path


def noise_floor(n, sets=20):
  zs = [mixture_fit(np.asarray(GMM.sample(jax.random.PRNGKey(1000 + s), n)), GMM)['z']
        for s in range(sets)]
  return float(np.mean(zs)), float(np.percentile(zs, 95))


def frontier(sde_name, n, steps, baseline_steps, iterations, grid_dir):
  sde = SDES[sde_name]
  mean_z, threshold = noise_floor(n)
  print(f'\n### {sde_name} ({type(sde).__name__}): exact-sample z over 20 sets of {n}: mean '
        f'{mean_z:.2f}, 95th percentile {threshold:.2f} (the floor)')
  print(f"  {'solver':18s} {'grid':10s} " + ' '.join(f'{"steps=" + str(s):>9s}' for s in
                                                     sorted(set(steps) | set(baseline_steps))))
  rows = []
  for label, fields, grids, (order, variant), points, nfe_of in solvers():
    for grid in grids:
      grid_steps = steps if grid == 'optimised' else sorted(set(steps) | set(baseline_steps))
      results = {}
      for num_steps in grid_steps:
        if nfe_of(num_steps) > 2 * max(steps + baseline_steps) or points(num_steps) < 3:
          continue
        extra = {'time_schedule': grid, 'num_steps': num_steps}
        if grid == 'optimised':
          extra['grid_path'] = grid_file(grid_dir, sde_name, sde, order, variant,
                                         points(num_steps) - 1, iterations)
        results[num_steps] = worst_z(sde, n, dict(fields, **extra))
      cells = ' '.join(f'{results[s][0]:9.2f}' if s in results else f'{"":9s}'
                       for s in sorted(set(steps) | set(baseline_steps)))
      print(f'  {label:18s} {grid:10s} {cells}', flush=True)
      by_nfe = sorted((nfe, z) for z, nfe in results.values())
      at_floor = [(nfe, z) for nfe, z in by_nfe if z <= threshold]
      # From here on every larger NFE tried is at the floor too (single settings can be lucky).
      stays = [by_nfe[i] for i in range(len(by_nfe)) if all(z <= threshold for _, z in by_nfe[i:])]
      rows.append((sde_name, label, grid, at_floor[0] if at_floor else None,
                   stays[0] if stays else None, by_nfe[-1][0]))
  return rows


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--num_samples', type=int, default=20000)
  parser.add_argument('--sde', default=','.join(SDES))
  parser.add_argument('--steps', default='4,5,6,7,8,10', help='budgets with optimised grids')
  parser.add_argument('--baseline_steps', default='12,15,20', help='more, default grids only')
  parser.add_argument('--iterations', type=int, default=200, help='Adam steps per grid')
  parser.add_argument('--grid_dir', default='runs/few_step_grids')
  args = parser.parse_args()
  print(f'## Few-step benchmark: {platform.machine()}, {os.cpu_count()} CPU cores, '
        f'JAX {jax.__version__} on {jax.devices()[0].platform}, float32')
  steps = [int(s) for s in args.steps.split(',')]
  baseline = [int(s) for s in args.baseline_steps.split(',')] if args.baseline_steps else []
  rows = []
  for sde_name in args.sde.split(','):
    rows += frontier(sde_name, args.num_samples, steps, baseline, args.iterations, args.grid_dir)
  print('\n### NFE frontier: fewest NFE at the floor (both seeds)\n')
  print('| SDE | solver | grid | fewest NFE at the floor (z) | at the floor from (z) | most NFE tried |')
  print('|---|---|---|---|---|---|')
  cell = lambda c: f'{c[0]} ({c[1]:.2f})' if c else 'not reached'
  for sde_name, label, grid, best, stays, most in rows:
    print(f'| {sde_name} | {label} | {grid} | {cell(best)} | {cell(stays)} | {most} |')


if __name__ == '__main__':
  main()
