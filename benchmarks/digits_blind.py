"""A blind by-eye test of digits samples: can a reader tell them from real digits, and are they as
recognisable?

    # 1. 64 samples of a run (seed 0, as sample.py draws them) shuffled with 64 real train digits
    #    into two grids of 64, A and B; the key stays in a file the reader does not open
    .venv/bin/python benchmarks/digits_blind.py make --name=vp --workdir=runs/demo_digits_vp \
        [--guide=runs/demo_digits_vp_guide --guide_scale=0.3 --guide_sigma_max=2] --out=blind
    # 2. the reader looks at blind/vp_A.png and blind/vp_B.png and lists, as row,col (1-based),
    #    the cells that are not clearly a digit, and (optionally) the cells they think generated
    .venv/bin/python benchmarks/digits_blind.py reveal --name=vp --out=blind \
        --unclear='A:1,2 4,3' --unclear='B:2,1' [--called_generated='A:1,1 ...' ...]

``reveal`` prints how many of the 64 generated and of the 64 real digits the reader found clearly
recognisable and, where given, how often the reader's real / generated calls were right (50%:
cannot tell). The real digits are a fresh random draw of the train split per name; the grids are
drawn as the README's (bilinear at 16 px, as the data is upsampled, then enlarged).
"""
from __future__ import annotations

import argparse
import os
import sys
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import score_sde  # noqa: E402
from score_sde import plotting  # noqa: E402
from score_sde.datasets import digits  # noqa: E402
from score_sde.evaluation import digits_classifier  # noqa: E402

PARTS = 'AB'


def make(args):
  settings = {}
  if args.guide:
    settings = dict(autoguidance_workdir=args.guide, autoguidance_scale=args.guide_scale,
                    autoguidance_sigma_max=args.guide_sigma_max)
  run = score_sde.load(args.workdir)
  generated = np.clip(run.sample(64, seed=0, show_progress=False, **settings).images, 0.0, 1.0)
  rng = np.random.default_rng(zlib.crc32(args.name.encode()))
  train = digits.load_split('train', 8)[0].astype(np.float64) / 255.0
  real = train[rng.choice(len(train), 64, replace=False)]
  order = rng.permutation(128)
  images = np.concatenate([generated, real])[order]
  is_generated = np.array([1] * 64 + [0] * 64)[order]
  os.makedirs(args.out, exist_ok=True)
  images = digits_classifier.at_classifier_size(images)
  for k, part in enumerate(PARTS):
    path = os.path.join(args.out, f'{args.name}_{part}.png')
    plotting.image_grid(images[64 * k:64 * (k + 1)], path)
    print(f'wrote {path}')
  np.save(os.path.join(args.out, f'{args.name}_key.npy'), is_generated)


def _cells(specs: list[str]) -> np.ndarray:
  """'A:r,c r,c' strings -> a (128,) 0/1 mask over the two grids."""
  mask = np.zeros(128, int)
  for spec in specs:
    part, cells = spec.split(':')
    for cell in cells.split():
      r, c = map(int, cell.split(','))
      mask[64 * PARTS.index(part) + 8 * (r - 1) + (c - 1)] = 1
  return mask


def reveal(args):
  is_generated = np.load(os.path.join(args.out, f'{args.name}_key.npy'))
  unclear = _cells(args.unclear)
  for label, which in (('generated', 1), ('real', 0)):
    mine = is_generated == which
    print(f'{args.name}: {label} {int(mine.sum() - unclear[mine].sum())}/64 clearly recognisable')
  if args.called_generated:
    called = _cells(args.called_generated)
    print(f'{args.name}: real / generated told apart in {np.mean(called == is_generated):.1%} of '
          f'128 (chance 50%); {int(called.sum())} called generated')


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('step', choices=('make', 'reveal'))
  parser.add_argument('--name', required=True)
  parser.add_argument('--out', default='blind')
  parser.add_argument('--workdir')
  parser.add_argument('--guide')
  parser.add_argument('--guide_scale', type=float, default=0.3)
  parser.add_argument('--guide_sigma_max', type=float, default=2.0)
  parser.add_argument('--unclear', action='append', default=[])
  parser.add_argument('--called_generated', action='append', default=[])
  args = parser.parse_args(argv)
  if args.step == 'make':
    if not args.workdir:
      parser.error('make needs --workdir')
    make(args)
  else:
    reveal(args)


if __name__ == '__main__':
  main(sys.argv[1:])
