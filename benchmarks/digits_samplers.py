"""Digits quality of trained runs by sampler, over several sampling seeds (mean +- standard error).

  .venv/bin/python benchmarks/digits_samplers.py --workdir=runs/digits_vp [--workdir=...] \
      [--sampler=dpm_solver25 --sampler=pc100 ...] [--seeds=3] [--num_samples=256] \
      [--guide=runs/digits_vp_guide --guide_scale=0 --guide_scale=0.5 --guide_sigma_max=2] \
      [--ema_sigma_rel=0.05 --ema_sigma_rel=0.1 ...]

Loads each run through ``score_sde.load`` (its stored config, EMA parameters), draws
``num_samples`` digits per seed with each named sampler (``SAMPLERS``: settings passed to
``Run.sample``), and prints a Markdown row per (run, sampler): NFE, the offline digits measure
(Fréchet distance of the digits classifier's features to the train split, mean confidence) as
mean +- standard error over seeds, and the share of samples the classifier gives >= 90% (held-out
real digits: 92.2%). One seed of 256 moves the FD by up to ~0.8, so rankings need
several. Writes ``<workdir>/samplers_<name>_seed0.png`` (the first 64 of seed 0).
``--guide`` (one per ``--workdir``, same order) autoguides each sampler with that run at every
``--guide_scale`` (``sampling.autoguidance_*``; 0: unguided), one row per scale, guided only for
sigma in [``--guide_sigma_min``, ``--guide_sigma_max``] (default: at every noise level).
``--ema_sigma_rel``: rows for each post-hoc EMA length (``sampling.ema_sigma_rel``; the run must
have stored snapshots) instead of the classic EMA.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import score_sde  # noqa: E402
from score_sde import plotting, runs  # noqa: E402
from score_sde.evaluation import digits_classifier  # noqa: E402

SAMPLERS = {
    'config': {},
    'dpm_solver25': dict(method='dpm_solver', order=2, num_steps=25),
    'dpm_solver25_clip': dict(method='dpm_solver', order=2, num_steps=25, x0_clip='static'),
    'heun18': dict(method='heun', num_steps=18),
    # EDM's stochastic Heun (Alg. 2) with its ImageNet-64 churn settings
    'heun18_churn': dict(method='heun', num_steps=18, S_churn=40.0, S_min=0.05, S_max=50.0,
                         S_noise=1.003),
    'pc100': dict(method='pc', predictor='euler_maruyama', corrector='none', num_steps=100),
    'pc200': dict(method='pc', predictor='euler_maruyama', corrector='none', num_steps=200),
    'ancestral100': dict(method='pc', predictor='ancestral_sampling', corrector='none',
                         num_steps=100),
    'dpm_solver2': dict(method='dpm_solver', order=2, num_steps=2),
    # models trained for few steps (training.objective 'ct' | 'cd' | 'meanflow') only
    'few_step1': dict(method='few_step', num_steps=1),
    'few_step2': dict(method='few_step', num_steps=2),
    'few_step2_logsnr': dict(method='few_step', num_steps=2, time_schedule='logsnr'),
}


def mean_se(values) -> str:
  v = np.asarray(values, np.float64)
  se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float('nan')
  return f'{v.mean():.2f} ± {se:.2f}'


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', action='append', required=True)
  parser.add_argument('--sampler', action='append', default=[])
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num_samples', type=int, default=256)
  parser.add_argument('--guide', action='append', default=[])
  parser.add_argument('--guide_scale', action='append', type=float, default=[])
  parser.add_argument('--guide_sigma_min', type=float, default=0.0)
  parser.add_argument('--guide_sigma_max', type=float, default=float('inf'))
  parser.add_argument('--ema_sigma_rel', action='append', type=float, default=[])
  args = parser.parse_args(argv)
  if args.guide and len(args.guide) != len(args.workdir):
    parser.error('give one --guide per --workdir')
  clf = digits_classifier.load_or_train()
  x_train, _ = digits_classifier.split_images('train')
  print('| run | sampler | NFE | FD | confidence | classifier >= 90% sure |\n|---|---|---|---|---|---|',
        flush=True)
  for i, workdir in enumerate(args.workdir):
    for sigma_rel in args.ema_sigma_rel or [None]:
      config = runs.stored_run_config(workdir)
      config.sampling.ema_sigma_rel = sigma_rel
      label = os.path.basename(workdir.rstrip('/')) + (
          '' if sigma_rel is None else f' (post-hoc EMA {sigma_rel:g})')
      rows(score_sde.load(workdir, config=config), label, i, args, clf, x_train)


def rows(run, label, i, args, clf, x_train):
  """One printed row per (sampler, guide scale) of ``run``."""
  workdir = run.workdir
  guided = [(None, 0.0)] if not args.guide else [
      (args.guide[i] if w else None, w) for w in (args.guide_scale or [0.5])]
  for name, (guide, w) in ((n, g) for n in args.sampler or ['config'] for g in guided):
    settings = dict(SAMPLERS[name])
    if guide:
      lo, hi = args.guide_sigma_min, args.guide_sigma_max
      settings.update(autoguidance_workdir=guide, autoguidance_scale=w,
                      autoguidance_sigma_min=lo, autoguidance_sigma_max=hi)
      name = f'{name}_autoguided{w:g}' + ('' if (lo, hi) == (0.0, float('inf'))
                                           else f'_sigma{lo:g}-{hi:g}')
    fds, confs, sure, nfe = [], [], [], None
    for seed in range(args.seeds):
      out = run.sample(args.num_samples, seed=seed, show_progress=False, **settings)
      images = digits_classifier.at_classifier_size(np.clip(out.images, 0.0, 1.0))
      q = digits_classifier.quality(clf, images, x_train)
      fds.append(q['frechet'])
      confs.append(q['confidence'])
      sure.append(np.mean(clf.probabilities(images).max(1) >= 0.9))
      nfe = out.nfe
      if seed == 0:
        tag = '' if run.config.sampling.get('ema_sigma_rel') is None else (
            f'_ema{run.config.sampling.ema_sigma_rel:g}')
        plotting.image_grid(images[:64], os.path.join(workdir, f'samplers_{name}{tag}_seed0.png'))
    print(f'| {label} | {name} | {nfe} | {mean_se(fds)} | '
          f'{np.mean(confs):.3f} | {np.mean(sure):.1%} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
