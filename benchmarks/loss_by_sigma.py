"""Per-noise-level loss of trained digits models, against the empirical optimum.

  .venv/bin/python benchmarks/loss_by_sigma.py \
      --run=VP:configs/vp/digits_ddpmpp_continuous.py:runs/digits_vp [--run=...] \
      [--num_examples=256] [--plot=docs/loss_by_sigma_digits.png] [--train_missing]

Each ``--run`` is NAME:CONFIG:WORKDIR. The EMA parameters of the workdir's latest checkpoint are
scored with ``score_sde.evaluation.loss_by_sigma`` on the training split (the set whose empirical
optimum is the best any model can do), in the shared log-spaced sigma buckets, next to the
optimum and the linear (Wiener) denoiser; prints one Markdown table per run and saves a plot of
all runs. With ``--train_missing`` a workdir without a checkpoint is trained first (train.py's
``train_and_evaluate`` with the config as it is).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde import checkpointing, datasets, models, sde_lib, train_state, training  # noqa: E402
from score_sde.datasets import digits  # noqa: E402
from score_sde.evaluation import loss_by_sigma  # noqa: E402
from score_sde.models import utils as mutils  # noqa: E402


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('run_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def restore_ema(config, workdir: str):
  """(step, model, EMA parameters) of the workdir's latest checkpoint."""
  model = models.get_model(config)
  template = train_state.restore_template(config, model)
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), read_only=True)
  state, _ = ckpt.restore(template, None)
  ckpt.close()
  return int(state.step), model, state.ema_params


def training_set(config) -> np.ndarray:
  """The digits' train split in the model's range, (N, H, W, 1) float32."""
  images, _ = digits.load_split('train', config.data.image_size)
  return datasets.get_data_scaler(config)(images.astype(np.float32) / 255.0)


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--run', action='append', default=[], help='NAME:CONFIG:WORKDIR')
  parser.add_argument('--num_examples', type=int, default=256)
  parser.add_argument('--plot', default=None)
  parser.add_argument('--train_missing', action='store_true')
  args = parser.parse_args(argv)
  results = {}
  for spec in args.run:
    name, config_path, workdir = spec.split(':', 2)
    config = load_config(config_path)
    if args.train_missing and not os.path.isdir(os.path.join(workdir, 'checkpoints')):
      start = time.time()
      training.train_and_evaluate(config, workdir)
      print(f'{name}: trained in {time.time() - start:.0f} s', flush=True)
    step, model, params = restore_ema(config, workdir)
    sde = sde_lib.get_sde(config)
    score_fn = jax.jit(mutils.get_score_fn(sde, model, params,
                                           continuous=config.training.continuous))
    start = time.time()
    result = loss_by_sigma.loss_by_sigma(jax.random.PRNGKey(0), score_fn, sde,
                                         training_set(config), num_examples=args.num_examples)
    results[name] = result
    print(f'\n### {name} ({config_path}, step {step}; {time.time() - start:.0f} s)\n')
    print(loss_by_sigma.markdown_table(result, name), flush=True)
  if args.plot and results:
    print('\nplot:', loss_by_sigma.plot(results, args.plot))


if __name__ == '__main__':
  main(sys.argv[1:])
