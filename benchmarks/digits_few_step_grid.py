"""A distilled few-step digits model beside its teacher: the first 64 samples of each sampler from
the same seed, side by side (one PNG).

  .venv/bin/python benchmarks/digits_few_step_grid.py --teacher=runs/digits_vp \
      --student=runs/digits_cd --out=docs/digits_cd_vs_teacher.png

Teacher: its config's sampler (DPM-Solver++(2M), 25 NFE for the VP digits); student: the
``few_step`` sampler in 1 step and in 2 steps on the log-SNR grid (the distillation config's).
Quality numbers for the same samplers: ``benchmarks/digits_samplers.py`` (RESULTS, "Digits: a
distilled 1-2 step model").
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import score_sde  # noqa: E402
from score_sde import plotting  # noqa: E402


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--teacher', required=True)
  parser.add_argument('--student', required=True)
  parser.add_argument('--out', default='docs/digits_cd_vs_teacher.png')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  teacher, student = score_sde.load(args.teacher), score_sde.load(args.student)
  draws = [(teacher, {}), (student, dict(method='few_step', num_steps=1)),
           (student, dict(method='few_step', num_steps=2, time_schedule='logsnr'))]
  panels = []
  for run, settings in draws:
    out = run.sample(64, seed=args.seed, show_progress=False, **settings)
    who = 'teacher' if run is teacher else 'distilled'
    panels.append((f'{who}: {out.method}, {out.nfe} NFE', out.images))
  print('Wrote', plotting.image_panels([panels], args.out))


if __name__ == '__main__':
  main(sys.argv[1:])
