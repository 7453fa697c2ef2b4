"""Where a trained consistency model of the 8-mode mixture is wrong: its consistency function
against the exact flow's end point, noise level by noise level.

Usage:  .venv/bin/python benchmarks/consistency_errors.py --workdir=runs/ct [--workdir=runs/cd]
        [--sigmas=0.05,0.1,0.3,1,3] [--num_samples=20000]

For each sigma: y = x(0) + sigma z with x(0) from the mixture, f(y, sigma) of the run's EMA
parameters (``consistency.consistency_fn``), and the exact end point: 59 Heun steps of the
mixture's exact probability flow (Karras grid) from sigma to sigma(eps). Prints the rms distance
of f to it and ``mixture_fit`` (z, weight and spread errors) of f(y) and of the exact end points.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import score_sde
from score_sde import consistency, sde_lib
from score_sde.datasets import toy
from score_sde.evaluation.mixture_fit import mixture_fit
from score_sde.models import utils as mutils
from score_sde.sampling import schedules

GMM = toy.gaussian_mixture()


def exact_end(sde, x, t, eps, num_points: int = 60):
  """x at time t (one t for all) carried to eps by Heun steps of the exact flow in scaled form."""
  sigmas = schedules.scaled_sigma(sde, schedules.get_time_grid('edm', sde, num_points, eps))
  sigmas = sigmas[sigmas <= schedules.scaled_sigma(sde, np.array([t]))[0] * (1 + 1e-6)]
  times = schedules.time_of_sigma(sde, sigmas)
  score_fn = GMM.score_fn(sde)

  def slope(y, time):
    m, s = schedules.marginal_coeffs(sde, np.array([time]))
    tt = jnp.full((y.shape[0],), time, jnp.float32)
    denoised = (m[0] * y + s[0]**2 * score_fn(m[0] * y, tt)) / m[0]
    return (y - denoised) / (s[0] / m[0])
  m0, _ = schedules.marginal_coeffs(sde, np.array([t]))
  y = x / m0[0]
  grid = [float(t)] + [float(v) for v in times if v < t - 1e-9]
  for a, b in zip(grid[:-1], grid[1:]):
    sa, sb = schedules.scaled_sigma(sde, np.array([a, b]))
    k0 = slope(y, a)
    k1 = slope(y + (sb - sa) * k0, b)
    y = y + 0.5 * (sb - sa) * (k0 + k1)
  return y


def fit_text(x):
  f = mixture_fit(np.asarray(x), GMM)
  return f"z {f['z']:.2f}, w_err {f['weight_err']:.4f}, s_err {f['std_err']:.3f}"


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', action='append', required=True)
  parser.add_argument('--sigmas', default='0.05,0.1,0.3,1,3')
  parser.add_argument('--num_samples', type=int, default=20000)
  args = parser.parse_args()
  print('| run | sigma | rms(f - exact end) | f(y) | exact end |\n|---|---|---|---|---|')
  for workdir in args.workdir:
    run = score_sde.load(workdir)
    sde, eps = run.sde, run.config.sampling.eps
    sigma_min = float(schedules.scaled_sigma(sde, np.array([eps]))[0])
    f_fn = jax.jit(lambda x, t: consistency.consistency_fn(
        mutils.get_score_fn(sde, run.model, run.params), sde, x, t, sigma_min))
    x0 = GMM.sample(jax.random.PRNGKey(0), args.num_samples)
    z = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    for sigma in (float(v) for v in args.sigmas.split(',')):
      t = float(schedules.time_of_sigma(sde, np.array([sigma]))[0])
      m, _ = schedules.marginal_coeffs(sde, np.array([t]))
      x = sde_lib.batch_mul(jnp.full((x0.shape[0],), m[0]), x0 + sigma * z)
      f = f_fn(x, jnp.full((x0.shape[0],), t, jnp.float32))
      end = exact_end(sde, x, t, eps)
      rms = float(jnp.sqrt(jnp.mean(jnp.sum((f - end)**2, axis=-1))))
      print(f'| {workdir} | {sigma:g} | {rms:.4f} | {fit_text(f)} | {fit_text(end)} |',
            flush=True)


if __name__ == '__main__':
  main()
