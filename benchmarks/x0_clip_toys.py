"""Data-prediction clipping on the 2-D mixture: the far-off-sample share of VP / sub-VP's
deterministic samplers with and without it.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/x0_clip_toys.py [--workdir=runs/x0_clip_toys]

Trains (or resumes, if done) the VP and sub-VP models of ``configs/experiments/sde_families_toy.py``
(the 8-mode mixture of radius 0.8, std 0.08; 1000 steps of batch 256) and samples each with
DPM-Solver++(2M) 20 steps, Heun 19 NFE and the adaptive ODE, 2000 samples x 2 seeds, without
clipping and with the x0 prediction clipped statically or dynamically (p = 0.995) to the box
[-1.2, 1.2]^2 (every data point up to 5 stds from its mode lies inside). The toys are unbounded
in general (``sampling.x0_clip`` refuses them: ConfigError), so the box is given here by hand,
through the library wrapper ``sampling.x0_clip.x0_clipped_score_fn``. Prints a Markdown table:
share of samples beyond radius 2 (far off: 15 stds outside the modes), the samples' exact NLL
under the data density, and the sliced Wasserstein distance to fresh data.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde import experiments, models, sampling, sde_lib, training  # noqa: E402
from score_sde.datasets import toy  # noqa: E402
from score_sde.evaluation import toy_metrics  # noqa: E402
from score_sde.models import utils as mutils  # noqa: E402
from score_sde.sampling import x0_clip  # noqa: E402

BOX = (-1.2, 1.2)
FAR = 2.0
SAMPLERS = {'DPM-Solver++(2M), 20 steps': {'method': 'dpm_solver', 'order': 2, 'num_steps': 20},
            'Heun, 10 steps (19 NFE)': {'method': 'heun', 'num_steps': 10},
            'adaptive ODE (rtol 1e-3)': {'method': 'ode', 'rtol': 1e-3, 'atol': 1e-3}}
FAMILIES = {'VP': 'vpsde', 'sub-VP': 'subvpsde'}


def family_config(sde_name: str):
  config = experiments.load_spec('configs/experiments/sde_families_toy.py').base
  config.data.dataset = 'gaussian_mixture'   # the spec's data axis
  config.training.sde = sde_name
  return config


def draw(config, sde, params, method: dict, clip: str | None, seed: int, n: int):
  config = config.copy_and_resolve_references()
  for key, value in method.items():
    config.sampling[key] = value
  model = models.get_model(config)
  score_fn = mutils.get_score_fn(sde, model, params, train=False, continuous=True)
  if clip is not None:
    score_fn = x0_clip.x0_clipped_score_fn(score_fn, sde, clip, BOX, 0.995)
  sampler = sampling.get_sampler(config, sde, (n, 2))
  samples, nfe = sampler(jax.random.PRNGKey(seed), score_fn)
  return np.asarray(samples), int(nfe)


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='runs/x0_clip_toys')
  parser.add_argument('--num_samples', type=int, default=2000)
  parser.add_argument('--seeds', type=int, default=2)
  args = parser.parse_args(argv)
  density = toy.gaussian_mixture()
  print('| family | sampler | NFE | x0 clip | beyond radius 2 | NLL (nats) | sliced W2 |\n'
        '|---|---|---|---|---|---|---|')
  for family, sde_name in FAMILIES.items():
    config = family_config(sde_name)
    state = training.train_and_evaluate(config, os.path.join(args.workdir, sde_name))
    sde = sde_lib.get_sde(config)
    for name, method in SAMPLERS.items():
      for clip in (None, 'static', 'dynamic'):
        far, nll, sw, nfe = [], [], [], 0
        for seed in range(args.seeds):
          x, nfe = draw(config, sde, state.ema_params, method, clip, seed, args.num_samples)
          x = np.where(np.isfinite(x), x, np.inf)
          far.append(np.mean(np.linalg.norm(x, axis=1) > FAR))
          nll.append(toy_metrics.nll(x, density)[0])
          data = toy_metrics.reference_data('gaussian_mixture', args.num_samples, seed + 100)
          sw.append(toy_metrics.sliced_wasserstein(x, data, jax.random.PRNGKey(seed)))
        print(f'| {family} | {name} | {nfe} | {clip or "off"} | {100 * np.mean(far):.2f}% | '
              f'{np.mean(nll):.3g} | {np.mean(sw):.4f} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
