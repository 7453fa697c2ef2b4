"""Sample quality of digits models, measured with nothing downloaded.

  .venv/bin/python benchmarks/digits_quality.py \
      --run=VP:runs/digits_vp/samples/samples_1200.npz --run=VE:... [--classifier_cache=PATH]

Each ``--run`` is NAME:PATH to a ``samples_<step>.npz`` written by ``sample.py`` (in the model's
range; the digits configs are centred, [-1, 1]). For each, and for two references, prints the
Fréchet distance to the training split (1,527 images, what the models learn from) in the
penultimate features of the digits classifier (``score_sde.evaluation.digits_classifier``) and
the mean class confidence (max softmax), as a Markdown table:

  * held-out real: the 270 test images, which neither the models nor the classifier saw (how
    close real digits get at this sample size);
  * noise: 270 images of uniform pixels.

Fréchet distances from different sample counts are not strictly comparable (the estimate is
biased upwards for small n); compare runs at equal sample counts.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde.evaluation import digits_classifier  # noqa: E402


def load_samples(path: str) -> np.ndarray:
  """sample.py's npz ([-1, 1], (n, 16, 16, 1)) -> [0, 1]."""
  with np.load(path) as f:
    return (np.asarray(f['samples'], np.float64) + 1.0) / 2.0


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--run', action='append', default=[], help='NAME:PATH of a samples npz')
  parser.add_argument('--classifier_cache', default=None)
  args = parser.parse_args(argv)
  clf = digits_classifier.load_or_train(args.classifier_cache)
  x_test, y_test = digits_classifier.split_images('test')
  x_train, _ = digits_classifier.split_images('train')
  rows = [('held-out real (test split)', x_test),
          ('noise (uniform pixels)', np.random.default_rng(0).random(x_test.shape))]
  for spec in args.run:
    name, path = spec.split(':', 1)
    rows.append((name, load_samples(path)))
  print(f'classifier test accuracy: {clf.accuracy(x_test, y_test):.3f}\n')
  print('| images | n | Fréchet distance to train split | mean confidence |\n|---|---|---|---|')
  for name, images in rows:
    q = digits_classifier.quality(clf, images, x_train)
    print(f'| {name} | {len(images)} | {q["frechet"]:.2f} | {q["confidence"]:.3f} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
