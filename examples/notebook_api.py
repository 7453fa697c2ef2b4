"""The Python API as a notebook would use it: load a trained run, sample with two samplers,
measure the samples, print a table.

    make demo-digits                                    # trains runs/demo_digits_vp (~7 min)
    .venv/bin/python examples/notebook_api.py           # or --workdir=<any run> --num_samples=256

Each cell of a notebook is a block below. Sample quality is measured without a download: for the
digits, the Fréchet distance and mean confidence of a small digits classifier (trained once, then
cached); for the 2-D Gaussian mixture, the exact NLL of the samples and the sliced Wasserstein
distance to fresh data; otherwise only NFE and time are shown.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import score_sde


def quality_fn(run: score_sde.Run):
  """images -> {metric: value} for the run's dataset (see the module docstring)."""
  dataset = run.config.data.dataset
  if dataset == 'digits':
    from score_sde.evaluation import digits_classifier
    clf = digits_classifier.load_or_train()
    reference, _ = digits_classifier.split_images('train')
    return lambda images: digits_classifier.quality(clf, images, reference)
  if dataset == 'gaussian_mixture':
    import jax
    from score_sde.evaluation import toy_metrics
    data = toy_metrics.reference_data(dataset, 2000)

    def toy(points):
      found = toy_metrics.compute(['nll', 'sliced_wasserstein'], points, data, dataset,
                                  jax.random.PRNGKey(0), {'sw_projections': 64})
      return {k: v['value'] for k, v in found.items()}
    return toy
  return lambda images: {}


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='runs/demo_digits_vp')
  parser.add_argument('--num_samples', type=int, default=256)
  parser.add_argument('--fast_steps', type=int, default=10,
                      help='steps of the fast sampler (DPM-Solver++(2M))')
  args = parser.parse_args(argv)

  # --- cell 1: load the run (its config, EMA parameters, SDE, score function) ---
  run = score_sde.load(args.workdir)
  print(f'{args.workdir}: step {run.step}, {run.config.training.sde}, '
        f'{run.config.model.name}, samples of shape {run.shape}')

  # --- cell 2: two samplers, same seed ---
  samplers = {
      f'DPM-Solver++(2M), {args.fast_steps} steps': dict(method='dpm_solver', order=2,
                                                          num_steps=args.fast_steps),
      'Heun (EDM), 10 steps': dict(method='heun', num_steps=10),
  }
  measure = quality_fn(run)
  rows = []
  for name, settings in samplers.items():
    out = run.sample(args.num_samples, seed=0, **settings)
    assert np.all(np.isfinite(out.images))
    rows.append({'sampler': name, 'NFE': out.nfe, 'seconds': f'{out.seconds:.1f}',
                 **{k: f'{v:.3g}' for k, v in measure(out.images).items()}})

  # --- cell 3: the table ---
  header = list(rows[0])
  print('| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header))
  for row in rows:
    print('| ' + ' | '.join(str(row[k]) for k in header) + ' |')
  return rows


if __name__ == '__main__':
  main(sys.argv[1:])
