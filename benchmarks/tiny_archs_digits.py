"""Every tiny architecture (``configs/tiny``) trained on the digits through ``train_and_evaluate``.

  .venv/bin/python benchmarks/tiny_archs_digits.py [--archs=ddpm,ncsnv2] [--n_iters=300]
      [--num_steps=25] [--workdir=/tmp/tiny_archs_digits]

For DDPM (VP, discrete), DDPM++ (VP), NCSN++ (VE), NCSN++ with skip pyramids (VE) and NCSNv2
(VE, discrete): train ``n_iters`` steps on the 8x8 digits (``default_digits.on_digits``) in two
runs (the second resumes from the first's checkpoint at n_iters / 2), check the loss fell
(the same fixed batch and noise scored at the initial and the final parameters; not the EMA ones,
which after a short run at the paper's EMA rate 0.9999 are still the initial ones), then draw
samples (EMA parameters) with every sampler (``SAMPLERS``) at ``num_steps`` steps and check they are finite.
Prints a Markdown table. ``tests/test_digits.py`` runs a short version of the same function.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default_digits  # noqa: E402
from score_sde import datasets, generation, losses, models, sde_lib, train_state  # noqa: E402
from score_sde import training  # noqa: E402

ARCHS = ('ddpm', 'ddpmpp', 'ncsnpp', 'ncsnpp_skip', 'ncsnv2')

# name -> config.sampling overrides; ancestral sampling exists for VP and VE (all tiny archs).
SAMPLERS = {
    'pc_euler_maruyama': dict(method='pc', predictor='euler_maruyama', corrector='none'),
    'pc_reverse_diffusion_langevin': dict(method='pc', predictor='reverse_diffusion',
                                          corrector='langevin'),
    'pc_ancestral': dict(method='pc', predictor='ancestral_sampling', corrector='none'),
    'pc_ald': dict(method='pc', predictor='none', corrector='ald'),
    'pc_probability_flow': dict(method='pc', predictor='euler_maruyama', corrector='none',
                                probability_flow=True),
    'ode': dict(method='ode', rtol=1e-2, atol=1e-2),
    'dpm_solver': dict(method='dpm_solver', order=2),
    'ddim': dict(method='ddim'),
    'heun': dict(method='heun'),
}


@dataclasses.dataclass
class ArchResult:
  arch: str
  sde: str
  continuous: bool
  loss_init: float
  loss_final: float
  train_s: float
  resumed_from: int
  samplers: dict[str, tuple[int, bool]]   # name -> (nfe, all finite)
  config: Any = None
  ema_params: Any = None


def tiny_digits_config(arch: str, n_iters: int, evaluate: bool = True):
  config = default_digits.on_digits(importlib.import_module(f'configs.tiny.{arch}').get_config())
  tc = config.training
  tc.n_iters = n_iters
  tc.log_freq = max(n_iters // 4, 1)
  tc.eval_freq = n_iters if evaluate else 10**9    # one eval step, at the end
  tc.snapshot_freq = n_iters
  tc.snapshot_freq_for_preemption = n_iters
  tc.snapshot_sampling = False
  return config


def fixed_batch_loss(config, params, num_noise: int = 4) -> float:
  """Mean loss of the first 64 training digits over ``num_noise`` fixed noise draws."""
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  x = next(datasets.get_dataset(config, 'train', num_local_devices=1, batch_size=64))['image'][0]
  loss_fn = losses.get_loss_fn(sde, model, train=False, continuous=config.training.continuous,
                               reduce_mean=config.training.reduce_mean)
  loss_fn = jax.jit(loss_fn)
  return float(np.mean([loss_fn(params, x, jax.random.PRNGKey(k), 0)[0]
                        for k in range(num_noise)]))


def sample_all(config, params, num_steps: int, samplers=SAMPLERS) -> dict[str, tuple[int, bool]]:
  """Each sampler's (NFE, whether all samples are finite), one sample per local device."""
  devices = jax.local_devices()
  sde, model = sde_lib.get_sde(config), models.get_model(config)
  out = {}
  for name, overrides in samplers.items():
    cfg = config.copy_and_resolve_references()
    cfg.sampling.num_steps = num_steps
    cfg.sampling.update(overrides)
    cfg.sampling.batch_size = len(devices)
    sample_fn = generation.get_sample_fn(cfg, sde, model, devices)
    samples, _, nfe = generation.draw(sample_fn, params, jax.random.PRNGKey(0), len(devices))
    out[name] = (nfe, bool(np.isfinite(samples).all()))
  return out


def run_arch(arch: str, workdir: str, n_iters: int, num_steps: int, samplers=SAMPLERS,
             evaluate: bool = True) -> ArchResult:
  """Trains (in two runs, the second resuming), scores the loss, samples. See the docstring."""
  config = tiny_digits_config(arch, n_iters, evaluate)
  model = models.get_model(config)
  init = train_state.init_train_state(config, model, train_state.get_optimizer(config.optim),
                                   jax.random.split(jax.random.PRNGKey(config.seed), 4)[0])
  loss_init = fixed_batch_loss(config, init.params)
  t0 = time.time()
  half = n_iters // 2
  config.training.n_iters = half
  config.training.snapshot_freq = config.training.snapshot_freq_for_preemption = half
  training.train_and_evaluate(config, workdir)
  config.training.n_iters = n_iters
  state = training.train_and_evaluate(config, workdir)
  train_s = time.time() - t0
  assert int(state.step) == n_iters, (arch, int(state.step))
  return ArchResult(arch, config.training.sde, bool(config.training.continuous), loss_init,
                    fixed_batch_loss(config, state.params), train_s, half,
                    sample_all(config, state.ema_params, num_steps, samplers), config,
                    state.ema_params)


def main(argv):
  import argparse
  parser = argparse.ArgumentParser()
  parser.add_argument('--archs', default=','.join(ARCHS))
  parser.add_argument('--n_iters', type=int, default=300)
  parser.add_argument('--num_steps', type=int, default=25)
  parser.add_argument('--workdir', default=None)
  args = parser.parse_args(argv)
  root = args.workdir or tempfile.mkdtemp(prefix='tiny_archs_digits_')
  print('| arch | SDE | training | loss at init -> after | train s (2 runs) | samplers: NFE, '
        'finite |\n|---|---|---|---|---|---|', flush=True)
  for arch in args.archs.split(','):
    r = run_arch(arch, os.path.join(root, arch), args.n_iters, args.num_steps)
    sampled = ', '.join(f'{k} {nfe}{"" if ok else " NaN!"}' for k, (nfe, ok) in r.samplers.items())
    print(f'| {r.arch} | {r.sde} | {"continuous" if r.continuous else "discrete"} | '
          f'{r.loss_init:.4g} -> {r.loss_final:.4g} | {r.train_s:.0f} | {sampled} |', flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
