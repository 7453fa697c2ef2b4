"""Peer test: our UniPC against the authors' reference implementation (wl-zhao/UniPC ``uni_pc.py``).

Usage (in the verification environment, which has torch; the reference is a checkout on disk):

    /work/torchenv/bin/python benchmarks/unipc_reference.py --uni_pc=PATH/TO/UniPC [--num_samples=2000]

``PATH/TO/UniPC`` is a checkout of https://github.com/wl-zhao/UniPC; its top-level ``uni_pc.py``
is imported from there at run time (nothing is downloaded, nothing of it is copied here). Both
solvers get the same prior noise, the same time grid (ours, handed to the reference by replacing
its ``get_time_steps``), the same marginals m(t), s(t) (a noise-schedule object wrapping our SDE,
so VE, rectified flow and EDM run through the reference too, not only its VP schedules) and the
exact score of the 8-mode mixture as the model (noise prediction eps = -s(t) score). The
reference runs in float64, ours in float32. Printed per case: relative error
||ours - ref|| / ||ref|| over all samples, and the largest absolute difference.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch

from score_sde import sde_lib
from score_sde.datasets import toy
from score_sde.sampling import schedules, unipc

GMM = toy.gaussian_mixture()
SDES = {
    'vp': sde_lib.VPSDE(),
    've': sde_lib.VESDE(sigma_min=0.01, sigma_max=3.0),
    'rectified_flow': sde_lib.RectifiedFlow(),
    'edm': sde_lib.EDMSDE(sigma_max=10.0),
}


def load_reference(checkout: str):
  path = os.path.join(checkout, 'uni_pc.py')
  spec = importlib.util.spec_from_file_location('reference_uni_pc', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class MarginalSchedule:
  """The reference's noise-schedule interface over our SDE's m(t), s(t) (float64)."""

  def __init__(self, sde):
    self.sde, self.T, self.total_N = sde, sde.T, 1000

  def _ms(self, t):
    m, s = schedules.marginal_coeffs(self.sde, t.detach().cpu().numpy().reshape(-1))
    return torch.from_numpy(m), torch.from_numpy(s)

  def marginal_log_mean_coeff(self, t):
    return torch.log(self._ms(t)[0])

  def marginal_alpha(self, t):
    return self._ms(t)[0]

  def marginal_std(self, t):
    return self._ms(t)[1]

  def marginal_lambda(self, t):
    m, s = self._ms(t)
    return torch.log(m) - torch.log(s)


def reference_samples(ref, sde, x_T, ts, order, variant):
  score_fn = jax.jit(GMM.score_fn(sde))

  def noise_fn(x, t):
    score = np.asarray(score_fn(jnp.asarray(x.numpy().reshape(x.shape[:2]), jnp.float32),
                                jnp.asarray(t.numpy(), jnp.float32)), np.float64)
    _, s = schedules.marginal_coeffs(sde, t.numpy()[:1])
    return torch.from_numpy(-s[0] * score).reshape(x.shape)

  solver = ref.UniPC(noise_fn, MarginalSchedule(sde), algorithm_type='data_prediction',
                     variant=variant)
  solver.get_time_steps = lambda **kwargs: torch.from_numpy(ts)
  with contextlib.redirect_stdout(io.StringIO()):   # the reference prints a line per step
    # (B, D, 1, 1): the reference's einsums take image-shaped (B, C, H, W) tensors.
    x = solver.sample(torch.from_numpy(np.asarray(x_T, np.float64))[:, :, None, None],
                      steps=len(ts) - 1,
                      t_start=float(ts[0]), t_end=float(ts[-1]), order=order,
                      skip_type='logSNR', method='multistep', lower_order_final=True)
  return x.numpy()[:, :, 0, 0]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--uni_pc', required=True, help='path of a wl-zhao/UniPC checkout')
  parser.add_argument('--num_samples', type=int, default=2000)
  parser.add_argument('--steps', default='5,10,20')
  args = parser.parse_args()
  ref = load_reference(args.uni_pc)
  torch.set_default_dtype(torch.float64)
  rng = jax.random.PRNGKey(0)
  shape = (args.num_samples, 2)
  print(f"{'sde':15s} {'order':>5s} {'variant':>7s} {'steps':>5s} {'grid':>7s} "
        f"{'rel err':>9s} {'max abs':>9s}")
  worst = 0.0
  for sde_name, sde in SDES.items():
    x_T = np.asarray(sde.prior_sampling(rng, shape))
    for grid in ('logsnr', 'edm'):
      for steps in map(int, args.steps.split(',')):
        ts = schedules.get_time_grid(grid, sde, steps + 1, 1e-3)
        for order in (1, 2, 3):
          for variant in unipc.VARIANTS:
            sampler = unipc.get_unipc_sampler(sde, shape, steps, order, variant, time_schedule=grid)
            ours = np.asarray(jax.jit(lambda r: sampler(r, GMM.score_fn(sde)))(rng)[0])
            theirs = reference_samples(ref, sde, x_T, ts, order, variant)
            rel = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
            worst = max(worst, rel)
            print(f'{sde_name:15s} {order:5d} {variant:>7s} {steps:5d} {grid:>7s} {rel:9.2e} '
                  f'{np.abs(ours - theirs).max():9.2e}', flush=True)
  print(f'largest relative error: {worst:.2e}')


if __name__ == '__main__':
  main()
