"""Prompt adherence of a text-conditioned digits model (``configs/text/digits.py``), offline.

Usage:  .venv/bin/python benchmarks/text_digits.py --workdir=runs/digits_text
        [--num_samples=500] [--scales=-1,0,1,3] [--picture=docs/text_digits.png]

For each guidance scale w (w = -1: the null context alone, i.e. unconditional), prompts
'a zero' ... 'a nine' are cycled over the samples and

  digit share   the share of samples the offline digits classifier reads as the prompted digit
  FD            the Fréchet distance of all samples to the test split in the classifier's
                features (evaluation/digits_classifier.py), with the test split's own FD to the
                train split as the floor
  thick - thin  mean ink (pixel mean in [0, 1]) of 'a thick <d>' samples minus 'a thin <d>'
                samples, against the same difference over the data's captions

The sampler is the run's (DPM-Solver++(2M), 25 steps unless --config.sampling overrides).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import score_sde
from score_sde import plotting
from score_sde.datasets import captions, digits
from score_sde.evaluation import digits_classifier


def ink(images) -> float:
  return float(np.mean(images))


def data_ink_gap() -> float:
  """Mean ink of the 'thick' minus the 'thin' captioned test images (16 px, [0, 1])."""
  images, _ = digits.load_split('test')
  made = captions.digits_captions()
  said = [made[i] for i in digits.split_indices()['test']]
  thick = np.array(['thick' in c for c in said])
  thin = np.array(['thin' in c for c in said])
  x = images.astype(np.float64) / 255.0
  return ink(x[thick]) - ink(x[thin])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--num_samples', type=int, default=500)
  parser.add_argument('--scales', default='-1,0,1,3')
  parser.add_argument('--picture', default=None)
  args = parser.parse_args()
  run = score_sde.load(args.workdir)
  clf = digits_classifier.load_or_train()
  test = digits_classifier.to_classifier_input(digits.load_split('test')[0])
  train = digits_classifier.to_classifier_input(digits.load_split('train')[0])
  floor = digits_classifier.quality(clf, test, train)['frechet']
  digit_prompts = [f'a {w}' for w in captions.DIGIT_WORDS]
  n = args.num_samples
  print(f'run {args.workdir} (step {run.step}); {n} samples per scale; FD floor (test vs '
        f'train) {floor:.2f}; data thick - thin ink {data_ink_gap():+.4f}')
  print('| w | digit share | FD | confidence | thick - thin ink | s |')
  print('|---|---|---|---|---|---|')
  rows = []
  for w in [float(v) for v in args.scales.split(',')]:
    t0 = time.time()
    s = run.sample(n, prompts=digit_prompts, guidance_scale=w, show_progress=False)
    images = s.images
    wanted = np.arange(n) % 10
    pixels = digits_classifier.to_classifier_input(
        np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8))
    share = float(np.mean(clf.probabilities(pixels).argmax(1) == wanted))
    q = digits_classifier.quality(clf, pixels, test)
    half = max(n // 2 // 10 * 10, 10)
    thick = run.sample(half, prompts=[f'a thick {d}' for d in captions.DIGIT_WORDS],
                       guidance_scale=w, show_progress=False, seed=1).images
    thin = run.sample(half, prompts=[f'a thin {d}' for d in captions.DIGIT_WORDS],
                      guidance_scale=w, show_progress=False, seed=1).images
    gap = ink(np.clip(thick, 0, 1)) - ink(np.clip(thin, 0, 1))
    print(f'| {w:g} | {share:.3f} | {q["frechet"]:.2f} | {q["confidence"]:.3f} | {gap:+.4f} | '
          f'{time.time() - t0:.0f} |', flush=True)
    rows.append((w, images))
  if args.picture:
    w, images = rows[-1]
    order = np.argsort(np.arange(n) % 10, kind='stable')
    plotting.class_grid(np.clip(images[order], 0, 1), (np.arange(n) % 10)[order], args.picture)
    print(f'Wrote {args.picture} (w = {w:g}, one row per prompt a zero .. a nine)')


if __name__ == '__main__':
  main()
