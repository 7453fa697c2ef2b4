"""Samples of a 2-D toy model against exact samples: the sliced Wasserstein bar of `make demo`.

  .venv/bin/python benchmarks/toy_quality.py --run=VP:runs/demo_spiral_vp/samples/samples_6000.npz \
      [--dataset=spiral] [--seeds=5]

For each ``--run`` (NAME:PATH of a ``samples_<step>.npz`` written by ``sample.py``) prints the
sliced Wasserstein distance SW_2 (``score_sde.evaluation.toy_metrics``, 256 projections) of the
samples to fresh data draws of the same size, next to the SW_2 of an exact-sample set of that
size to the same draws (what sampling error alone costs), and their ratio; mean over ``seeds``
fresh draws. Also the share of samples farther from every one of 20,000 data points than the
data's own 99.9th percentile of that distance (samples between the arms or far out).
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde.evaluation import toy_metrics  # noqa: E402


def nearest_distance(x: np.ndarray, data: np.ndarray) -> np.ndarray:
  """Distance of each point of x (n, D) to its nearest point of data (m, D), in chunks."""
  out = []
  for chunk in np.array_split(x, max(1, len(x) // 500)):
    d2 = (np.sum(chunk**2, 1)[:, None] - 2 * chunk @ data.T + np.sum(data**2, 1)[None])
    out.append(np.sqrt(np.maximum(d2.min(1), 0.0)))
  return np.concatenate(out)


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--run', action='append', default=[])
  parser.add_argument('--dataset', default='spiral')
  parser.add_argument('--seeds', type=int, default=5)
  args = parser.parse_args(argv)
  dense = toy_metrics.reference_data(args.dataset, 20000, seed=1000)
  held = toy_metrics.reference_data(args.dataset, 2000, seed=1001)
  far = np.quantile(nearest_distance(held, dense), 0.999)
  print('| samples | n | SW_2 to fresh data | exact samples\' SW_2 | ratio | off the data |\n'
        '|---|---|---|---|---|---|')
  for spec in args.run:
    name, path = spec.split(':', 1)
    with np.load(path) as f:
      samples = np.asarray(f['samples'], np.float32)
    n = len(samples)
    model_sw, exact_sw = [], []
    for seed in range(args.seeds):
      fresh = toy_metrics.reference_data(args.dataset, n, seed=10 + seed)
      exact = toy_metrics.reference_data(args.dataset, n, seed=100 + seed)
      rng = jax.random.PRNGKey(seed)
      model_sw.append(toy_metrics.sliced_wasserstein(samples, fresh, rng))
      exact_sw.append(toy_metrics.sliced_wasserstein(exact, fresh, rng))
    off = float(np.mean(nearest_distance(samples, dense) > far))
    print(f'| {name} | {n} | {np.mean(model_sw):.4f} | {np.mean(exact_sw):.4f} '
          f'| {np.mean(model_sw) / np.mean(exact_sw):.2f} | {off:.3f} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
