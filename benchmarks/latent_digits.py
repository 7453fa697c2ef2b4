"""Latent diffusion on the digits, every stage through the command-line tools, timed.

  .venv/bin/python benchmarks/latent_digits.py [--workdir=runs/latent_digits] [--num_samples=256]
      [--stages=autoencoder,latent,pixel]

Stages (each skipped when its output exists, so a stopped run continues):
  autoencoder  train.py --mode=train_autoencoder, configs/latent/digits_autoencoder.py
  latent       train.py + sample.py, configs/latent/digits_ddpmpp.py on those latents (the
               encoding of the split happens inside train.py, timed with it)
  pixel        train.py + sample.py, configs/vp/digits_ddpmpp_continuous.py with the latent
               config's settings (paper preconditioning, 1,200 steps): the pixel-space model of
               the same network, steps, batch and sampler
Then prints, as Markdown: the autoencoder's reconstruction error on the 270 held-out digits
(mean |x - D(E(x))| and RMSE in [0, 1] pixel units, posterior means), the wall time of each
stage, and the digits measure of ``benchmarks/digits_quality.py`` (Fréchet distance to the
training split in the digits classifier's features, mean confidence) of both models' samples
(DPM-Solver++(2M), 25 NFE, the same seed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from score_sde.checkpointing import autoencoder as ae_checkpoints  # noqa: E402
from score_sde.datasets import digits  # noqa: E402
from score_sde.evaluation import digits_classifier  # noqa: E402


def run(args: list[str], log: str) -> float:
  """Runs one command (output to ``log``); returns its wall time in seconds."""
  start = time.time()
  with open(log, 'w') as f:
    subprocess.run([sys.executable] + args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                   check=True)
  return time.time() - start


def stage(name: str, done: str, commands: list[list[str]], workdir: str, times: dict) -> None:
  if os.path.exists(done):
    return
  times[name] = sum(run(c, os.path.join(workdir, f'{name}_{i}.log')) for i, c in enumerate(commands))


def reconstruction(ae_workdir: str) -> dict[str, float]:
  import jax
  model, params = ae_checkpoints.load_autoencoder(ae_workdir)
  images, _ = digits.load_split('test', 16)
  x = images.astype(np.float32) / 127.5 - 1.0
  recon = jax.jit(lambda p, x: model.apply({'params': p}, x)[0])(params, x)
  err = (np.clip(np.asarray(recon), -1, 1) - x) / 2.0        # [0, 1] pixel units
  return {'l1': float(np.mean(np.abs(err))), 'rmse': float(np.sqrt(np.mean(err**2))),
          'scaling_factor': float(model.scaling_factor)}


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', default='runs/latent_digits')
  parser.add_argument('--num_samples', type=int, default=256)
  parser.add_argument('--stages', default='autoencoder,latent,pixel')
  args = parser.parse_args(argv)
  w = os.path.abspath(args.workdir)
  os.makedirs(w, exist_ok=True)
  times_path = os.path.join(w, 'times.json')
  times = json.load(open(times_path)) if os.path.exists(times_path) else {}
  ae, lat, pix = (os.path.join(w, n) for n in ('ae', 'latent', 'pixel'))
  sample = ['sample.py', f'--num_samples={args.num_samples}', '--seed=0']
  stages = args.stages.split(',')
  if 'autoencoder' in stages:
    stage('autoencoder', ae_checkpoints.export_path(ae), [[
        'train.py', '--mode=train_autoencoder', '--config=configs/latent/digits_autoencoder.py',
        f'--workdir={ae}']], w, times)
    json.dump(times, open(times_path, 'w'))
  for name, config, workdir, extra in (
      ('latent', 'configs/latent/digits_ddpmpp.py', lat, [f'--config.data.latents={ae}']),
      ('pixel', 'configs/vp/digits_ddpmpp_continuous.py', pix,
       ['--config.model.precond=paper', '--config.training.n_iters=1200',
        '--config.training.snapshot_freq=1200'])):
    if name not in stages:
      continue
    flags = [f'--config={config}', f'--workdir={workdir}'] + extra
    stage(f'{name}_train', os.path.join(workdir, 'checkpoints', '1200'),
          [['train.py'] + flags], w, times)
    stage(f'{name}_sample', os.path.join(workdir, 'samples', 'samples_1200.npz'),
          [sample + flags], w, times)
    json.dump(times, open(times_path, 'w'))
  print('| stage | wall time (s) |\n|---|---|')
  for k, v in times.items():
    print(f'| {k} | {v:.0f} |')
  if os.path.exists(ae_checkpoints.export_path(ae)):
    r = reconstruction(ae)
    print(f'\nautoencoder on the 270 held-out digits: mean |x - D(E(x))| {r["l1"]:.4f}, RMSE '
          f'{r["rmse"]:.4f} ([0, 1] pixels); latent scale factor {r["scaling_factor"]:.4f}')
  clf = digits_classifier.load_or_train(None)
  x_train, _ = digits_classifier.split_images('train')
  x_test, _ = digits_classifier.split_images('test')
  print('\n| images | n | FD to the train split | mean confidence |\n|---|---|---|---|')
  rows = [('held-out real digits', x_test)]
  for name, workdir in (('latent DDPM++ (8x8x2 latents)', lat), ('pixel DDPM++ (16x16x1)', pix)):
    path = os.path.join(workdir, 'samples', 'samples_1200.npz')
    if os.path.exists(path):
      with np.load(path) as f:
        rows.append((name, (np.asarray(f['samples'], np.float64) + 1.0) / 2.0))
  for name, images in rows:
    q = digits_classifier.quality(clf, images, x_train)
    print(f'| {name} | {len(images)} | {q["frechet"]:.2f} | {q["confidence"]:.3f} |')


if __name__ == '__main__':
  main(sys.argv[1:])
