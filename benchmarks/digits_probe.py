"""Train a digits config (with overrides), then measure it: loss by sigma, FD / confidence.

  .venv/bin/python benchmarks/digits_probe.py --config=configs/vp/digits_ddpmpp_continuous.py \
      --workdir=runs/probe_vp [--set training.n_iters=600 --set model.precond=edm ...] \
      [--sampler=heun] [--num_samples=256]

Trains (``train_and_evaluate``; skipped when the workdir already holds the final step), draws
``num_samples`` samples with the config's sampler (or each ``--sampler`` override: 'heun',
'dpm_solver', 'pc', 'ode'), writes ``<workdir>/probe_<sampler>.png`` (the first 64) and prints,
per sampler, the classifier-feature FD to the train split, the mean confidence and the share of
samples the classifier is less than 50% sure of (``score_sde.evaluation.digits_classifier``),
then the loss-by-sigma table (``score_sde.evaluation.loss_by_sigma``).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import loss_by_sigma as lbs_bench  # noqa: E402
from score_sde import generation, plotting, sde_lib, training  # noqa: E402
from score_sde.evaluation import digits_classifier, loss_by_sigma  # noqa: E402
from score_sde.models import utils as mutils  # noqa: E402

SAMPLERS = {
    'config': {},
    'heun': dict(method='heun', num_steps=18),
    'dpm_solver': dict(method='dpm_solver', order=2, num_steps=25),
    'dpm_solver50': dict(method='dpm_solver', order=2, num_steps=50),
    'pc': dict(method='pc', predictor='euler_maruyama', corrector='none'),
}


def _value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config, overrides):
  config = config.unlock()
  for item in overrides:
    key, value = item.split('=', 1)
    node = config
    *path, leaf = key.split('.')
    for p in path:
      node = node[p]
    node[leaf] = _value(value)
  return config.lock()


def total_variation(images: np.ndarray) -> np.ndarray:
  """Anisotropic total variation per image, (n, 16, 16[, 1]) in [0, 1] -> (n,)."""
  x = np.clip(np.asarray(images, np.float64).reshape(len(images), 16, 16), 0.0, 1.0)
  return (np.abs(np.diff(x, axis=1)).sum((1, 2)) + np.abs(np.diff(x, axis=2)).sum((1, 2)))


def sample(config, model, params, num_samples: int, seed: int = 0) -> tuple[np.ndarray, int]:
  """``num_samples`` samples of the config's sampler in one batch, and its NFE."""
  config = config.unlock()
  config.sampling.batch_size = num_samples
  sample_fn = generation.get_sample_fn(config.lock(), sde_lib.get_sde(config), model,
                                       jax.local_devices()[:1])
  samples, _, nfe = generation.draw(sample_fn, params, jax.random.PRNGKey(seed), num_samples)
  return samples, nfe


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', required=True)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--set', action='append', default=[])
  parser.add_argument('--sampler', action='append', default=[])
  parser.add_argument('--num_samples', type=int, default=256)
  parser.add_argument('--no_sigma_table', action='store_true')
  args = parser.parse_args(argv)
  config = apply_overrides(lbs_bench.load_config(args.config), args.set)
  start = time.time()
  training.train_and_evaluate(config, args.workdir)
  print(f'train wall {time.time() - start:.0f} s (n_iters {config.training.n_iters})', flush=True)
  step, model, params = lbs_bench.restore_ema(config, args.workdir)
  clf = digits_classifier.load_or_train()
  x_train, _ = digits_classifier.split_images('train')
  tv_max = total_variation(x_train).max()   # no training digit is noisier than this
  print('| sampler | NFE | FD | confidence | share < 0.5 sure | share noisier than any training '
        'digit | sample s |\n|---|---|---|---|---|---|---|')
  for name in args.sampler or ['config']:
    cfg = config.unlock()
    for k, v in SAMPLERS[name].items():
      cfg.sampling[k] = v
    cfg = cfg.lock()
    t0 = time.time()
    samples, nfe = sample(cfg, model, params, args.num_samples)
    images = (np.asarray(samples, np.float64) + 1.0) / 2.0
    plotting.save_samples_picture(cfg, samples[:64], os.path.join(args.workdir, f'probe_{name}.png'))
    np.savez_compressed(os.path.join(args.workdir, f'probe_{name}.npz'), samples=samples)
    q = digits_classifier.quality(clf, images, x_train)
    unsure = float(np.mean(clf.probabilities(np.clip(images, 0, 1)).max(1) < 0.5))
    noisy = float(np.mean(total_variation(images) > tv_max))
    print(f'| {name} | {nfe} | {q["frechet"]:.2f} | {q["confidence"]:.3f} | {unsure:.3f} '
          f'| {noisy:.3f} | {time.time() - t0:.0f} |', flush=True)
  if not args.no_sigma_table:
    sde = sde_lib.get_sde(config)
    score_fn = jax.jit(mutils.get_score_fn(sde, model, params,
                                           continuous=config.training.continuous))
    result = loss_by_sigma.loss_by_sigma(jax.random.PRNGKey(0), score_fn, sde,
                                         lbs_bench.training_set(config))
    np.savez(os.path.join(args.workdir, 'loss_by_sigma.npz'), **result)
    print(loss_by_sigma.markdown_table(result, 'model'))


if __name__ == '__main__':
  main(sys.argv[1:])
