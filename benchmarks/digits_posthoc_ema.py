"""Post-hoc EMA on the digits: the sample quality of EMA lengths chosen after training, and of
data-prediction clipping.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/digits_posthoc_ema.py \
      [--config=vp.digits_ddpmpp_continuous] [--workdir=runs/digits_vp_posthoc] \
      [--sigma_rels=0.02,0.035,0.07,0.15,0.2,0.25] [--num_samples=256] [--seeds=3]

Trains the config (or resumes it; a finished run is only read) with power EMAs of
sigma_rel 0.05 and 0.10 tracked and snapshotted every ``--snapshot_freq`` steps (EDM2's two
profiles), then draws ``num_samples`` digits from each of ``seeds`` prior noises (the same for
every row) with the config's sampler (DPM-Solver++(2M), 25 NFE) for: the raw parameters, the
classic EMA (``model.ema_rate``), the two
tracked power EMAs, and the EMA of each ``--sigma_rels`` rebuilt from the snapshots
(``checkpointing.posthoc.reconstruct_params``). Each row: the Fréchet distance to the training split
in the digits classifier's features (mean ± standard error over the seeds: at 256 samples one FD
varies by ~0.5 from noise to noise) and the mean confidence (``evaluation.digits_classifier``,
as ``benchmarks/digits_quality.py``), and for rebuilt EMAs the fit's relative residual. Then
the classic EMA and the best rebuilt one are sampled again with ``sampling.x0_clip`` 'static'
and 'dynamic' (p = 0.995). Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde import datasets, models, sampling, sde_lib  # noqa: E402
from score_sde.checkpointing import posthoc as posthoc_snapshots  # noqa: E402
from score_sde import training  # noqa: E402
from score_sde.evaluation import digits_classifier  # noqa: E402
from score_sde.models import utils as mutils  # noqa: E402
from score_sde.sampling import x0_clip  # noqa: E402

TRACKED = (0.05, 0.10)


def get_config(name: str, snapshot_freq: int):
  config = importlib.import_module(f'configs.{name}').get_config()
  config.training.posthoc_ema_sigma_rels = TRACKED
  config.training.posthoc_ema_snapshot_freq = snapshot_freq
  return config


def get_draw(config, num_samples: int):
  """draw(params, clip) -> samples in [0, 1]; one compiled sampler per clip setting, the same
  prior noise (seed 0) for every call."""
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  sampler = sampling.get_sampler(config, sde, (num_samples, config.data.image_size,
                                               config.data.image_size, config.data.num_channels))
  inverse = datasets.get_data_inverse_scaler(config)
  compiled = {}

  def draw(params, clip=None, seed=0):
    if clip not in compiled:
      def run(params, rng, clip=clip):
        score_fn = mutils.get_score_fn(sde, model, params, continuous=config.training.continuous)
        if clip is not None:
          score_fn = x0_clip.x0_clipped_score_fn(score_fn, sde, clip, x0_clip.data_range(config))
        return sampler(rng, score_fn)[0]
      compiled[clip] = jax.jit(run)
    return np.asarray(inverse(compiled[clip](params, jax.random.PRNGKey(seed))), np.float64)
  return draw


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--config', default='vp.digits_ddpmpp_continuous')
  parser.add_argument('--workdir', default='runs/digits_vp_posthoc')
  parser.add_argument('--snapshot_freq', type=int, default=50)
  parser.add_argument('--sigma_rels', default='0.02,0.035,0.07,0.15,0.2,0.25')
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--num_samples', type=int, default=256)
  args = parser.parse_args(argv)
  config = get_config(args.config, args.snapshot_freq)
  state = jax.device_get(training.train_and_evaluate(config, args.workdir))
  draw = get_draw(config, args.num_samples)
  clf = digits_classifier.load_or_train()
  reference = digits_classifier.split_images('train')[0]

  seeds = range(args.seeds)

  def row(name, params, note='', clip=None):
    q = [digits_classifier.quality(clf, draw(params, clip, seed), reference) for seed in seeds]
    fd, conf = (np.array([x[k] for x in q]) for k in ('frechet', 'confidence'))
    se = fd.std(ddof=1) / np.sqrt(len(fd)) if len(fd) > 1 else float('nan')
    print(f'| {name} | {clip or "off"} | {note} | {fd.mean():.2f} ± {se:.2f} | {conf.mean():.3f} |',
          flush=True)
    return fd.mean()

  print(f'step {int(state.step)}, {args.num_samples} samples x {args.seeds} prior-noise seeds '
        f'(mean ± s.e.), {config.sampling.method} {config.sampling.num_steps} steps\n\n'
        '| parameters | x0 clip | note | FD to train split | mean confidence |\n|---|---|---|---|---|')
  row('raw (no EMA)', state.params)
  row(f'classic EMA, ema_rate {config.model.ema_rate}', state.ema_params)
  for rel, params in zip(TRACKED, state.power_ema_params):
    row(f'power EMA sigma_rel {rel}, tracked', params)
  fds = {}
  for rel in (float(s) for s in args.sigma_rels.split(',')):
    params, _, residual = posthoc_snapshots.reconstruct_params(args.workdir, rel, state.params)
    fds[rel] = row(f'post-hoc EMA sigma_rel {rel}', params, f'profile fit {residual:.1%} off'), params
  best = min(fds, key=lambda r: fds[r][0])
  for clip in ('static', 'dynamic'):
    row(f'classic EMA, ema_rate {config.model.ema_rate}', state.ema_params, clip=clip)
    row(f'post-hoc EMA sigma_rel {best} (best FD)', fds[best][1], clip=clip)


if __name__ == '__main__':
  main(sys.argv[1:])
